//! The console's thread: an acceptor (its main tasklet), one tasklet per connection, and the
//! sampler tasklet (see `state`). Everything the tasklets share lives on this thread, in an
//! `Rc`: no locks.

use std::io::Write;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tasklets::net::{TcpListener, TcpStream};

use crate::http::{self, Failed, Head};
use crate::state::State;
use crate::{Builder, Request};

const PAGE: &str = include_str!("page.html");

pub(crate) fn run(listener: std::net::TcpListener, builder: Builder, stop: Arc<AtomicBool>) {
    let listener = TcpListener::from(listener);
    let state = Rc::new(State::new(builder));
    {
        let (state, stop) = (state.clone(), stop.clone());
        tasklets::Builder::new()
            .name("console sampler")
            .spawn(move || state.sample_forever(&stop))
            .expect("a stack for the console's sampler");
    }
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of fds, say: let connections end before trying again.
                tasklets::time::sleep(Duration::from_millis(20));
                continue;
            }
        };
        if state.connections.get() >= state.limits.max_connections {
            state.refused.set(state.refused.get() + 1);
            refuse(stream);
            continue;
        }
        state.connections.set(state.connections.get() + 1);
        state.peak_connections.set(state.peak_connections.get().max(state.connections.get()));
        let open = Open(state.clone());
        let spawned = tasklets::Builder::new().name("console connection").spawn(move || {
            serve_connection(&stream, &open.0);
        });
        drop(spawned); // without a stack (out of memory) the connection just closes
    }
}

/// Counts a connection as open while it lives.
struct Open(Rc<State>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.connections.set(self.0.connections.get() - 1);
    }
}

/// Answers `503` without waiting for anything, and closes.
fn refuse(stream: TcpStream) {
    let _ = stream.set_nonblocking(true);
    let body = b"too many console connections\n";
    let _ = (&stream).write(&http::response(503, "text/plain; charset=utf-8", body, false, false));
}

fn serve_connection(stream: &TcpStream, state: &State) {
    let limits = &state.limits;
    let mut buf = Vec::new();
    for served in 1..=limits.max_requests_per_connection {
        let head = match http::read_head(stream, &mut buf, limits) {
            Ok(head) => head,
            Err(Failed::Gone) => return,
            Err(Failed::Answer(status, why)) => {
                let body = format!("{why}\n");
                let _ = http::send(
                    stream,
                    &http::response(status, "text/plain; charset=utf-8", body.as_bytes(), false, false),
                    limits,
                );
                return;
            }
        };
        let keep_alive = head.keep_alive && served < limits.max_requests_per_connection;
        let (status, content_type, body) = answer(&head, state);
        state.served.set(state.served.get() + 1);
        let bytes = http::response(status, &content_type, &body, head.method == "HEAD", keep_alive);
        if http::send(stream, &bytes, limits).is_err() || !keep_alive {
            return;
        }
    }
}

fn answer(head: &Head, state: &State) -> (u16, String, Vec<u8>) {
    let text = |status: u16, message: &str| {
        (status, "text/plain; charset=utf-8".to_owned(), format!("{message}\n").into_bytes())
    };
    if head.method != "GET" && head.method != "HEAD" {
        return text(405, "the console is read-only: only GET and HEAD");
    }
    if !state.allow_remote && !head.host.as_deref().is_none_or(is_loopback_host) {
        return text(403, "this console answers only requests addressed to a loopback host");
    }
    match head.path.as_str() {
        "/" | "/index.html" => (200, "text/html; charset=utf-8".to_owned(), PAGE.as_bytes().to_vec()),
        "/api/state" => (200, "application/json".to_owned(), state.state_json().as_bytes().to_vec()),
        path => match state.routes.iter().find(|(route, _)| route == path) {
            Some((_, handler)) => {
                let response = handler(&Request { path: &head.path, query: &head.query });
                (response.status, response.content_type, response.body)
            }
            None => text(404, "not found"),
        },
    }
}

/// Whether a `Host` header names this machine: `localhost`, a loopback IP, with or without a
/// port.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':')
            .map_or(host, |(name, port)| if port.parse::<u16>().is_ok() { name } else { host })
    };
    name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn loopback_hosts() {
        for host in
            ["localhost", "localhost:6680", "127.0.0.1", "127.0.0.1:80", "[::1]:6680", "[::1]", "a.localhost"]
        {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in
            ["example.com", "example.com:6680", "10.0.0.1:6680", "127.0.0.1.evil.com", "[2001:db8::1]:1"]
        {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
