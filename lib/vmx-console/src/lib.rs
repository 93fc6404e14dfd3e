//! The web console's files: everything under `assets/`, compiled into the binary by
//! `build.rs`, served with a content-hash ETag, `Cache-Control: no-cache` (the browser
//! revalidates; an unchanged file costs a 304) and a gzip body when the client accepts one.
//!
//! Each embedded file's ETag and gzip body are computed once, on first use. [`Assets::dir`]
//! reads the files from a directory at request time instead (development: an edit shows on
//! reload, no rebuild).
//!
//! This crate knows HTTP types (`http`) but no framework: the API crate routes to it.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_NONE_MATCH, VARY,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use sha2::{Digest, Sha256};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

/// Files smaller than this are sent as they are: gzip would save less than its overhead.
const MIN_GZIP_BYTES: usize = 256;

/// One file, ready to send.
#[derive(Debug)]
pub struct Asset {
    /// The path under `assets/`, `/`-separated (`index.html`, `screens/list.js`).
    pub path: String,
    pub content_type: &'static str,
    /// A strong ETag from the content's SHA-256, quoted.
    pub etag: String,
    pub body: Bytes,
    /// The gzip body, when the type compresses and gzip makes it smaller.
    pub gzip: Option<Bytes>,
}

impl Asset {
    fn new(path: String, body: Bytes) -> Self {
        let content_type = content_type(&path);
        let digest = Sha256::digest(&body);
        let etag = format!("\"{}\"", hex(&digest[..16]));
        let gzip = (compressible(content_type) && body.len() >= MIN_GZIP_BYTES)
            .then(|| gzip(&body))
            .flatten()
            .filter(|z| z.len() < body.len())
            .map(Bytes::from);
        Self {
            path,
            content_type,
            etag,
            body,
            gzip,
        }
    }

    /// The response to a GET with these request headers: 304 when `If-None-Match` names
    /// this version, else 200 with the gzip body if `Accept-Encoding` allows it.
    pub fn respond(&self, request: &HeaderMap) -> Response<Bytes> {
        let mut resp = Response::new(Bytes::new());
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&self.etag) {
            h.insert(ETAG, v);
        }
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        if none_match(request, &self.etag) {
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            return resp;
        }
        h.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        match &self.gzip {
            Some(z) if accepts_gzip(request) => {
                h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                *resp.body_mut() = z.clone();
            }
            _ => *resp.body_mut() = self.body.clone(),
        }
        resp
    }
}

/// Where the files come from.
#[derive(Debug, Clone)]
pub enum Assets {
    /// The copies compiled into the binary.
    Embedded,
    /// A directory read at request time (`VMX_CONSOLE_DIR`).
    Dir(PathBuf),
}

impl Assets {
    pub fn embedded() -> Self {
        Self::Embedded
    }

    pub fn dir(path: impl Into<PathBuf>) -> Self {
        Self::Dir(path.into())
    }

    /// The file at `path` (relative to `assets/`, `/`-separated), if there is one. A path
    /// with `..`, a root, a backslash or a hidden component finds nothing.
    pub fn get(&self, path: &str) -> Option<Arc<Asset>> {
        if !safe(path) {
            return None;
        }
        match self {
            Self::Embedded => embedded_table().get(path).cloned(),
            Self::Dir(root) => {
                let file = root.join(Path::new(path));
                let body = std::fs::read(&file).ok()?;
                Some(Arc::new(Asset::new(path.to_owned(), Bytes::from(body))))
            }
        }
    }

    /// The paths of the embedded files, sorted.
    pub fn embedded_paths() -> Vec<&'static str> {
        embedded::FILES.iter().map(|(p, _)| *p).collect()
    }
}

fn embedded_table() -> &'static HashMap<&'static str, Arc<Asset>> {
    static TABLE: OnceLock<HashMap<&'static str, Arc<Asset>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        embedded::FILES
            .iter()
            .map(|(path, bytes)| {
                (
                    *path,
                    Arc::new(Asset::new((*path).to_owned(), Bytes::from_static(bytes))),
                )
            })
            .collect()
    })
}

fn safe(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\\')
        && !path.contains('\0')
        && Path::new(path).components().all(|c| match c {
            Component::Normal(name) => name.to_str().is_some_and(|n| !n.starts_with('.')),
            _ => false,
        })
}

/// The Content-Type for a file name's extension.
pub fn content_type(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "woff2" => "font/woff2",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn compressible(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || content_type.starts_with("application/json")
        || content_type.starts_with("application/manifest+json")
        || content_type.starts_with("image/svg+xml")
}

fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(body).ok()?;
    enc.finish().ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `If-None-Match` lists `etag` (or `*`); weak comparison, as RFC 9110 asks for it.
fn none_match(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// Whether `Accept-Encoding` allows gzip (`gzip` or `*` with a non-zero q).
fn accepts_gzip(request: &HeaderMap) -> bool {
    request
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or_default();
            let q_zero = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !q_zero
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn gunzip(z: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(z)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn every_file_under_assets_is_embedded_with_its_bytes() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
        let mut on_disk = Vec::new();
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                let name = p.file_name().unwrap().to_str().unwrap().to_owned();
                if name.starts_with('.') {
                    continue;
                }
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    let rel = p.strip_prefix(root).unwrap().to_str().unwrap();
                    out.push(rel.replace('\\', "/"));
                }
            }
        }
        walk(&root, &root, &mut on_disk);
        on_disk.sort();
        assert_eq!(Assets::embedded_paths(), on_disk);
        assert!(on_disk.iter().any(|p| p == "index.html"));
        for path in &on_disk {
            let asset = Assets::embedded().get(path).unwrap();
            let on_disk = std::fs::read(root.join(path)).unwrap();
            assert!(
                asset.body[..] == on_disk[..],
                "{path}: the embedded copy differs from the file"
            );
        }
    }

    #[test]
    fn etag_revalidation_answers_304() {
        let a = Asset::new(
            "app.js".into(),
            Bytes::from_static(b"export const x = 1;\n"),
        );
        let r = a.respond(&HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(r.headers()[CACHE_CONTROL], "no-cache");
        let etag = r.headers()[ETAG].to_str().unwrap().to_owned();
        assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");
        for inm in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"x\", {etag}"),
            "*".into(),
        ] {
            let r = a.respond(&headers(&[("if-none-match", &inm)]));
            assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{inm}");
            assert!(r.body().is_empty());
        }
        let r = a.respond(&headers(&[("if-none-match", "\"other\"")]));
        assert_eq!(r.status(), StatusCode::OK);
        // Another content, another ETag.
        let b = Asset::new(
            "app.js".into(),
            Bytes::from_static(b"export const x = 2;\n"),
        );
        assert_ne!(a.etag, b.etag);
    }

    #[test]
    fn gzip_only_when_accepted_and_worth_it() {
        let text = "const line = 'the same line again';\n".repeat(50);
        let a = Asset::new("app.js".into(), Bytes::from(text.clone()));
        let r = a.respond(&headers(&[("accept-encoding", "br, gzip;q=0.8")]));
        assert_eq!(r.headers()[CONTENT_ENCODING], "gzip");
        assert_eq!(r.headers()[VARY], "Accept-Encoding");
        assert!(r.body().len() < text.len());
        assert_eq!(gunzip(r.body()), text.as_bytes());
        for refused in ["br", "identity", "gzip;q=0", ""] {
            let r = a.respond(&headers(&[("accept-encoding", refused)]));
            assert!(r.headers().get(CONTENT_ENCODING).is_none(), "{refused}");
            assert_eq!(r.body(), text.as_bytes());
        }
        // The compressed body is computed once, not per request.
        let z1 = a.gzip.as_ref().unwrap().as_ptr();
        let r = a.respond(&headers(&[("accept-encoding", "gzip")]));
        assert_eq!(r.body().as_ptr(), z1);
        // A tiny file and an image are sent as they are.
        let tiny = Asset::new("a.css".into(), Bytes::from_static(b"a{}"));
        assert!(tiny.gzip.is_none());
        let png = Asset::new("a.png".into(), Bytes::from(vec![0u8; 4096]));
        assert!(png.gzip.is_none());
        assert_eq!(png.content_type, "image/png");
    }

    #[test]
    fn content_types_by_extension() {
        for (p, t) in [
            ("index.html", "text/html; charset=utf-8"),
            ("x/y.MJS", "text/javascript; charset=utf-8"),
            ("app.css", "text/css; charset=utf-8"),
            ("favicon.svg", "image/svg+xml"),
            ("data.json", "application/json"),
            ("noext", "application/octet-stream"),
        ] {
            assert_eq!(content_type(p), t, "{p}");
        }
    }

    #[test]
    fn traversal_and_hidden_paths_find_nothing() {
        let tmp = tempdir();
        let dir = tmp.path();
        std::fs::write(dir.join("ok.js"), b"1").unwrap();
        std::fs::write(dir.join(".secret"), b"2").unwrap();
        let assets = Assets::dir(dir);
        assert!(assets.get("ok.js").is_some());
        for bad in [
            "",
            ".secret",
            "../Cargo.toml",
            "a/../../Cargo.toml",
            "/etc/passwd",
            "a\\b",
            "./ok.js",
        ] {
            assert!(assets.get(bad).is_none(), "{bad}");
            assert!(Assets::embedded().get(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn dir_mode_reads_at_request_time() {
        let tmp = tempdir();
        let dir = tmp.path();
        std::fs::write(dir.join("app.css"), b"body{}").unwrap();
        let assets = Assets::dir(dir);
        let first = assets.get("app.css").unwrap();
        std::fs::write(dir.join("app.css"), b"body{color:red}").unwrap();
        let second = assets.get("app.css").unwrap();
        assert_eq!(&second.body[..], b"body{color:red}");
        assert_ne!(first.etag, second.etag);
        assert!(assets.get("missing.css").is_none());
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }
}
