//! `uploadLog`: a gzip of the SDK's log POSTed to `/v1/logs` of the server the
//! WebSocket URL names, over a tiny hand-written HTTP/1.1 client (plain `http`
//! only: one request per connection, `Connection: close`, body read to EOF).

use std::io::Write as _;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Where a log upload goes, derived from a WebSocket URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// `host:port` to connect to.
    pub(crate) connect: String,
    /// The `Host` header value.
    pub(crate) host: String,
}

/// `ws://H:P/ws` → connect to `H:P` (port 80 when absent), `Host: H:P`.
pub(crate) fn target(ws_url: &str) -> Result<Target, String> {
    if ws_url.starts_with("wss://") {
        return Err(format!(
            "{ws_url}: the log upload speaks plain http only; wss:// would need https"
        ));
    }
    let Some(rest) = ws_url.strip_prefix("ws://") else {
        return Err(format!("{ws_url}: not a ws:// URL"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("{ws_url}: no host in the URL"));
    }
    let has_port = match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    let connect = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok(Target {
        connect,
        host: authority.to_owned(),
    })
}

/// The server's answer: HTTP status and body.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

/// Gzips `data`.
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = gz.write_all(data);
    gz.finish().unwrap_or_default()
}

/// POSTs `body` to `path` on `target` with `headers`; the whole exchange must
/// finish within `limit`.
pub(crate) async fn post(
    target: &Target,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
    limit: Duration,
) -> Result<Response, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(&target.connect)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", target.connect))?;
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            target.host,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| format!("sending the request failed: {e}"))?;
        stream
            .write_all(body)
            .await
            .map_err(|e| format!("sending the log failed: {e}"))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("reading the answer failed: {e}"))?;
        parse_response(&raw)
    };
    tokio::time::timeout(limit, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")))
}

fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| "the answer is not HTTP (no end of headers)".to_owned())?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| "the answer is not HTTP (bad status line)".to_owned())?;
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let rest = &raw[split + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk size line is cut")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_hex = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_hex:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("a chunk is cut".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_from_ws_urls() {
        assert_eq!(
            target("ws://127.0.0.1:8080/ws").unwrap(),
            Target {
                connect: "127.0.0.1:8080".into(),
                host: "127.0.0.1:8080".into()
            }
        );
        assert_eq!(
            target("ws://chat.example/ws").unwrap().connect,
            "chat.example:80"
        );
        assert_eq!(target("ws://[::1]:9/ws").unwrap().connect, "[::1]:9");
        assert_eq!(target("ws://[::1]/ws").unwrap().connect, "[::1]:80");
        assert!(target("wss://chat.example/ws").is_err());
        assert!(target("http://chat.example/ws").is_err());
        assert!(target("ws:///ws").is_err());
    }

    #[test]
    fn responses_plain_and_chunked() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
        let r = parse_response(
            b"HTTP/1.1 401 Unauthorized\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (401, &b"abcde"[..]));
        assert!(parse_response(b"garbage").is_err());
    }
}
