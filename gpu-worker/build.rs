//! With the `torch` feature, test binaries link libtorch dynamically and
//! torch-sys gives them no rpath: without one they would need
//! LD_LIBRARY_PATH. LIBTORCH_LIB comes from .cargo/config.toml.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH_LIB");
    if std::env::var_os("CARGO_FEATURE_TORCH").is_some()
        && let Ok(dir) = std::env::var("LIBTORCH_LIB")
    {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}/lib");
    }
}
