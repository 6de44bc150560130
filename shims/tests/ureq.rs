//! An unmodified third-party blocking crate (`ureq`, a synchronous HTTP client on std::net)
//! inside tasklets: 200 concurrent requests to a local HTTP server written as plain blocking
//! std code, all on the test's one thread.

use std::cell::Cell;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

mod common;
use common::{install, ms};

/// One HTTP/1.1 exchange, thread-style: read the request head, sleep a little (a slow
/// backend), answer with the path in the body, close.
fn serve(conn: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    std::thread::sleep(ms(20));
    let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let body = format!("hello from {path}");
    let mut conn = conn;
    write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
    conn.flush()
}

#[test]
fn ureq_makes_200_concurrent_requests_to_a_tasklet_http_server_on_one_thread() {
    install();
    const REQUESTS: usize = 200;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Rc::new(Cell::new(0usize));
    let most_open = Rc::new(Cell::new(0usize));
    let server = {
        let (open, most_open) = (open.clone(), most_open.clone());
        tasklets::spawn(move || {
            let handlers: Vec<_> = (0..REQUESTS)
                .map(|_| {
                    let (conn, _) = listener.accept().unwrap();
                    let (open, most_open) = (open.clone(), most_open.clone());
                    tasklets::spawn(move || {
                        open.set(open.get() + 1);
                        most_open.set(most_open.get().max(open.get()));
                        serve(conn).unwrap();
                        open.set(open.get() - 1);
                    })
                })
                .collect();
            for h in handlers {
                h.join().unwrap();
            }
        })
    };
    let start = Instant::now();
    let clients: Vec<_> = (0..REQUESTS)
        .map(|i| {
            tasklets::spawn(move || {
                std::thread::sleep(ms(i as u64 % 20)); // spread the connects over the backlog
                ureq::get(&format!("http://{addr}/item/{i}")).call().unwrap().into_string().unwrap()
            })
        })
        .collect();
    for (i, c) in clients.into_iter().enumerate() {
        assert_eq!(c.join().unwrap(), format!("hello from /item/{i}"));
    }
    server.join().unwrap();
    let took = start.elapsed();
    println!(
        "200 ureq requests (20 ms server think time each): {took:?}, {} connections open at once",
        most_open.get()
    );
    assert!(most_open.get() > 1, "the requests never overlapped");
    // One after another: 200 x 20 ms = 4 s.
    assert!(took < Duration::from_secs(4), "{took:?}");
}
