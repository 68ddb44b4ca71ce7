//! The peers of bench/l4.sh: a TCP sink and a UDP echo (the backends), and the TCP and UDP
//! loads. The standard library only, so bench/l4.sh builds it with `rustc -O` (no manifest
//! entry, no dependency).
//!
//! usage:
//!   l4_load tcp-sink ADDR                  read and discard every connection's bytes
//!   l4_load udp-echo ADDR                  send every datagram back
//!   l4_load tcp TARGET SECONDS CONNECTIONS write 64 KiB blocks on each connection for SECONDS;
//!                                          prints "BYTES SECONDS"
//!   l4_load udp TARGET SECONDS CLIENTS SIZE WINDOW
//!                                          CLIENTS sockets, each keeping WINDOW datagrams of
//!                                          SIZE bytes in flight to TARGET (a new one per reply;
//!                                          one lost is resent after 200 ms) for SECONDS; prints
//!                                          "REPLIES LOST SECONDS"

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str {
        args.get(i).map(String::as_str).unwrap_or_else(|| {
            eprintln!("usage: see the top of bench/l4_load.rs");
            std::process::exit(2)
        })
    };
    let num = |i: usize| -> u64 { arg(i).parse().expect("a number") };
    match arg(0) {
        "tcp-sink" => tcp_sink(arg(1)),
        "udp-echo" => udp_echo(arg(1)),
        "tcp" => tcp_load(arg(1), num(2), num(3)),
        "udp" => udp_load(arg(1), num(2), num(3), num(4) as usize, num(5)),
        other => {
            eprintln!("unknown mode {other}");
            std::process::exit(2)
        }
    }
}

fn tcp_sink(addr: &str) {
    let listener = TcpListener::bind(addr).expect("bind");
    for stream in listener.incoming().flatten() {
        thread::spawn(move || {
            let mut stream = stream;
            let mut buf = vec![0u8; 256 * 1024];
            while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
        });
    }
}

fn udp_echo(addr: &str) {
    let socket = UdpSocket::bind(addr).expect("bind");
    let mut buf = [0u8; 65536];
    loop {
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    }
}

fn tcp_load(target: &str, seconds: u64, connections: u64) {
    let total = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            let total = total.clone();
            let mut stream = TcpStream::connect(target).expect("connect");
            thread::spawn(move || {
                let block = vec![7u8; 64 * 1024];
                let mut sent = 0u64;
                while Instant::now() < end {
                    match stream.write(&block) {
                        Ok(n) => sent += n as u64,
                        Err(e) => panic!("write: {e}"),
                    }
                }
                total.fetch_add(sent, Ordering::Relaxed);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let took = start.elapsed().as_secs_f64();
    println!("{} {took:.3}", total.load(Ordering::Relaxed));
}

fn udp_load(target: &str, seconds: u64, clients: u64, size: usize, window: u64) {
    let (replies, lost) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (replies, lost, stop) = (replies.clone(), lost.clone(), stop.clone());
            let target = target.to_owned();
            thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                socket.connect(&target).unwrap();
                socket
                    .set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let data = vec![42u8; size];
                let mut buf = vec![0u8; 65536];
                let (mut got, mut missed) = (0u64, 0u64);
                for _ in 0..window {
                    let _ = socket.send(&data);
                }
                while !stop.load(Ordering::Relaxed) {
                    match socket.recv(&mut buf) {
                        Ok(_) => got += 1,
                        // Lost (or refused): put one back in flight.
                        Err(_) => missed += 1,
                    }
                    let _ = socket.send(&data);
                }
                replies.fetch_add(got, Ordering::Relaxed);
                lost.fetch_add(missed, Ordering::Relaxed);
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let took = start.elapsed().as_secs_f64();
    for t in threads {
        t.join().unwrap();
    }
    println!(
        "{} {} {took:.3}",
        replies.load(Ordering::Relaxed),
        lost.load(Ordering::Relaxed)
    );
}
