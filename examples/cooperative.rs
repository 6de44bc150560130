//! The cooperative multitasking example from the "Story of Stackless" slides: a receiving, a
//! sending and a third tasklet, run by the scheduler. It prints exactly what Stackless prints.
//!
//! The send finds the receiver already waiting, so the exchange happens at once and, by the
//! default preference (the receiver runs first), the receiver continues while the sender goes to
//! the end of the run queue, behind `another_tasklet`.
//!
//! Run it with `cargo run --release --example cooperative`.

use tasklets::Channel;

fn receiving_tasklet(channel: Channel<String>) {
    println!("Receiving tasklet started");
    println!("{}", channel.receive().expect("the sending tasklet sends once"));
    println!("Receiving tasklet finished");
}

fn sending_tasklet(channel: Channel<String>) {
    println!("Sending tasklet started");
    channel.send("send from sending_tasklet".to_string()).expect("the receiving tasklet is waiting");
    println!("sending tasklet finished");
}

fn another_tasklet() {
    println!("Just another tasklet in the scheduler");
}

fn main() {
    let channel = Channel::new();
    let receiver = channel.clone();
    tasklets::spawn(move || receiving_tasklet(receiver));
    tasklets::spawn(move || sending_tasklet(channel));
    tasklets::spawn(another_tasklet);
    tasklets::run();
}
