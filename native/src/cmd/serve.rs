//! `scdd serve [DIR]`: serves the browser page (built by scripts/build-web.sh into target/web)
//! on 127.0.0.1 until interrupted.
use crate::io::serve::Server;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The page's folder.
    #[arg(default_value = "target/web")]
    pub dir: PathBuf,
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
}

pub fn run(a: Args) -> Result<()> {
    let server = Server::bind(&a.dir, a.port)?;
    println!("serving {} at {} (Ctrl-C stops)", a.dir.display(), server.url()?);
    server.run()?;
    Ok(())
}
