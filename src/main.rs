use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    garden_artifacts::cli::run().await
}
