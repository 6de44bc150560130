//! HTTP/1.1 on `tasklets::net`: reading a request head within bounds, writing a response.
//!
//! Bounds (see [`Limits`](crate::Limits)): a request head larger than `max_header_bytes`
//! gets `431` and the connection is closed; a head that is not complete within
//! `header_timeout` of the moment the server started waiting for it (slowloris, or an idle
//! keep-alive connection) closes the connection; a request with a body gets `413`; responses
//! are written with `write_timeout`, so a client that does not read cannot hold its tasklet.
//! Only `GET` and `HEAD` exist (the console is read-only).

use std::io::{self, Read, Write};
use std::time::Instant;

use tasklets::net::TcpStream;

use crate::Limits;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) host: Option<String>,
    pub(crate) keep_alive: bool,
}

/// Why no request could be read.
#[derive(Debug)]
pub(crate) enum Failed {
    /// The client closed the connection, or sent nothing in time.
    Gone,
    /// An answer is due before closing: the status and its reason.
    Answer(u16, &'static str),
}

const MAX_HEADERS: usize = 48;

/// Reads one request head from `stream`. `buf` holds bytes already read (a pipelined request)
/// and keeps what follows the head.
pub(crate) fn read_head(stream: &TcpStream, buf: &mut Vec<u8>, limits: &Limits) -> Result<Head, Failed> {
    let deadline = Instant::now() + limits.header_timeout;
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let head = head_of(&request)?;
                    buf.drain(..len);
                    return Ok(head);
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(Failed::Answer(431, "too many header fields"))
                }
                Err(_) => return Err(Failed::Answer(400, "malformed request")),
            }
            if buf.len() >= limits.max_header_bytes {
                return Err(Failed::Answer(431, "request head too large"));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failed::Gone);
        }
        stream.set_read_timeout(Some(left)).map_err(|_| Failed::Gone)?;
        let mut chunk = [0u8; 2048];
        let room = (limits.max_header_bytes - buf.len()).min(chunk.len());
        match (&*stream).read(&mut chunk[..room]) {
            Ok(0) => return Err(Failed::Gone),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Failed::Gone), // timed out (WouldBlock) or reset
        }
    }
}

fn head_of(request: &httparse::Request<'_, '_>) -> Result<Head, Failed> {
    let method = request.method.unwrap_or_default().to_owned();
    let target = request.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let version = request.version.unwrap_or(1);
    let mut host = None;
    let mut connection = None;
    for header in request.headers.iter() {
        let value = String::from_utf8_lossy(header.value).trim().to_owned();
        if header.name.eq_ignore_ascii_case("host") {
            host = Some(value);
        } else if header.name.eq_ignore_ascii_case("connection") {
            connection = Some(value.to_ascii_lowercase());
        } else if header.name.eq_ignore_ascii_case("transfer-encoding")
            || (header.name.eq_ignore_ascii_case("content-length") && value != "0")
        {
            return Err(Failed::Answer(413, "request bodies are not accepted"));
        }
    }
    let keep_alive = match connection.as_deref() {
        Some(c) if c.contains("close") => false,
        Some(c) if c.contains("keep-alive") => true,
        _ => version == 1,
    };
    Ok(Head { method, path: path.to_owned(), query: query.to_owned(), host, keep_alive })
}

/// The reason phrase of the statuses the console uses.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// The bytes of a whole response. The page and its data are confined by a content security
/// policy that allows nothing from elsewhere.
pub(crate) fn response(
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    keep_alive: bool,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\n\
         Referrer-Policy: no-referrer\r\n\
         Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
         connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n\
         Connection: {}\r\n\r\n",
        reason(status),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// Writes `bytes`, giving up when the whole of it is not written within the write timeout
/// (a client that reads slowly cannot hold its connection longer than that).
pub(crate) fn send(stream: &TcpStream, mut bytes: &[u8], limits: &Limits) -> io::Result<()> {
    let deadline = Instant::now() + limits.write_timeout;
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match (&*stream).write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}
