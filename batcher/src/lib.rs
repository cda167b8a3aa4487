//! batcher
