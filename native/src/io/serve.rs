//! A static file server for the browser page (`scdd serve DIR`): GET and HEAD on 127.0.0.1, the
//! MIME types a module page needs (`.wasm` as `application/wasm`, `.js` as JavaScript), nothing
//! outside DIR, one thread per connection, `Connection: close`. For one person's browser on
//! their own machine, not for the network.
use crate::error::{Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};

/// The Content-Type for a file name.
pub fn mime(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("wasm") => "application/wasm",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        Some("csv") => "text/csv",
        _ => "application/octet-stream",
    }
}

/// The file under `root` a request path names: percent-decoded, without query, `index.html` for
/// a directory; `None` for anything that would leave `root` (`..`, absolute parts).
pub fn resolve(root: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode(path)?;
    let mut out = root.to_path_buf();
    for c in Path::new(decoded.trim_start_matches('/')).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    if out.is_dir() {
        out.push("index.html");
    }
    Some(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A bound server; [`Server::run`] answers until the process ends.
pub struct Server {
    listener: TcpListener,
    root: PathBuf,
}

impl Server {
    /// Binds 127.0.0.1:`port` (0: any free port) to serve `root`.
    pub fn bind(root: &Path, port: u16) -> Result<Server> {
        if !root.join("index.html").is_file() {
            crate::error::bail!("{}: no index.html (build the page with scripts/build-web.sh, which writes target/web)", root.display());
        }
        let listener = TcpListener::bind(("127.0.0.1", port)).with_context(|| format!("binding 127.0.0.1:{port}"))?;
        Ok(Server { listener, root: root.to_path_buf() })
    }

    pub fn url(&self) -> Result<String> {
        Ok(format!("http://{}/", self.listener.local_addr()?))
    }

    pub fn run(self) -> Result<()> {
        for stream in self.listener.incoming() {
            let Ok(stream) = stream else { continue };
            let root = self.root.clone();
            std::thread::spawn(move || {
                let _ = answer(stream, &root);
            });
        }
        Ok(())
    }
}

fn answer(stream: TcpStream, root: &Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut out = stream;
    if method != "GET" && method != "HEAD" {
        return reply(&mut out, "405 Method Not Allowed", "text/plain", b"only GET and HEAD\n", method == "HEAD");
    }
    match resolve(root, target).map(|p| (std::fs::read(&p), p)) {
        Some((Ok(body), p)) => reply(&mut out, "200 OK", mime(&p), &body, method == "HEAD"),
        Some((Err(_), _)) => reply(&mut out, "404 Not Found", "text/plain", b"not found\n", method == "HEAD"),
        None => reply(&mut out, "403 Forbidden", "text/plain", b"outside the served folder\n", method == "HEAD"),
    }
}

fn reply(out: &mut TcpStream, status: &str, mime: &str, body: &[u8], head: bool) -> std::io::Result<()> {
    write!(out, "HTTP/1.1 {status}\r\nContent-Type: {mime}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n", body.len())?;
    if !head {
        out.write_all(body)?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn serves_files_with_their_types_and_nothing_outside() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("site");
        std::fs::create_dir_all(site.join("pkg")).unwrap();
        std::fs::write(site.join("index.html"), "<p>hi</p>").unwrap();
        std::fs::write(site.join("pkg/m.wasm"), b"\0asm").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "no").unwrap();
        assert!(resolve(&site, "/../secret.txt").is_none());
        assert!(resolve(&site, "/pkg/%2e%2e/%2e%2e/secret.txt").is_none());
        assert_eq!(resolve(&site, "/?x=1").unwrap(), site.join("index.html"));
        let server = Server::bind(&site, 0).unwrap();
        let url = server.url().unwrap();
        let addr = url.trim_start_matches("http://").trim_end_matches('/').to_string();
        std::thread::spawn(move || server.run());
        let get = |path: &str| {
            let mut s = TcpStream::connect(&addr).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut r = String::new();
            s.read_to_string(&mut r).unwrap();
            r
        };
        let wasm = get("/pkg/m.wasm");
        assert!(wasm.starts_with("HTTP/1.1 200") && wasm.contains("Content-Type: application/wasm") && wasm.ends_with("\0asm"), "{wasm}");
        assert!(get("/").contains("<p>hi</p>"));
        assert!(get("/missing.js").starts_with("HTTP/1.1 404"));
        assert!(get("/../secret.txt").starts_with("HTTP/1.1 403"));
        assert!(Server::bind(dir.path(), 0).err().unwrap().to_string().contains("no index.html"));
    }
}
