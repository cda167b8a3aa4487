//! `mixed`'s command line: the real-time flags work after the subcommand,
//! and a job input that is not there fails before any load is sent.

use clap::Parser;
use loadtest::cli::{Cli, run};

#[tokio::test]
async fn a_missing_job_input_is_named_before_anything_is_sent() {
    // Port 1 refuses connections: reaching it would be a different error.
    let cli = Cli::parse_from([
        "sb-loadtest",
        "--url",
        "http://127.0.0.1:1",
        "mixed",
        "--concurrency",
        "16",
        "--duration",
        "1",
        "--job-input",
        "/nonexistent/sb-mixed/rows.csv",
    ]);
    let err = run(cli).await.unwrap_err().to_string();
    assert!(
        err.contains("--job-input /nonexistent/sb-mixed/rows.csv: no such file"),
        "{err}"
    );
}

#[test]
fn closed_and_open_loop_exclude_each_other_and_the_input_is_required() {
    let both = [
        "sb-loadtest",
        "mixed",
        "--job-input",
        "x.csv",
        "--concurrency",
        "4",
        "--rate",
        "10",
    ];
    assert!(Cli::try_parse_from(both).is_err());
    assert!(Cli::try_parse_from(["sb-loadtest", "mixed", "--rate", "10"]).is_err());
    let ok = [
        "sb-loadtest",
        "mixed",
        "--job-input",
        "x.csv",
        "--rate",
        "10",
        "--cancel-job",
        "false",
    ];
    assert!(Cli::try_parse_from(ok).is_ok());
}
