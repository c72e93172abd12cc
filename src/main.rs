fn main() -> anyhow::Result<()> {
    driftwarden::cli::run()
}
