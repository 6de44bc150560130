//! Runs the compiled example programs and checks their exact output.
//!
//! The binaries are looked up next to this test's own: this test is
//! `target/<profile>/deps/examples-<hash>`, the examples are `target/<profile>/examples/<name>`.
//! Plain `cargo test` builds them; `cargo test --test examples` alone does not, so a missing or
//! out-of-date binary fails the test with what to run (the test never runs cargo itself: a
//! nested cargo would wait for the build lock the outer one holds).

use std::process::Output;
use std::time::Duration;

/// How long an example may run; each finishes in milliseconds.
const TIME_LIMIT: Duration = Duration::from_secs(60);

mod common;

/// Runs example `name` with `args`, killing it if it exceeds [`TIME_LIMIT`].
fn run_example(name: &str, args: &[&str]) -> Output {
    common::run_example(name, args, TIME_LIMIT)
}

/// Runs example `name` and returns its stdout, checking that it succeeded silently on stderr.
fn stdout_of(name: &str, args: &[&str]) -> String {
    let output = run_example(name, args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "example {name} {args:?} failed ({}): {stderr}", output.status);
    assert!(stderr.is_empty(), "example {name} {args:?} wrote to stderr: {stderr}");
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// Formats numbers as Python prints a list: `[3, 1, 2]`.
fn python_list(numbers: &[u32]) -> String {
    let items: Vec<String> = numbers.iter().map(u32::to_string).collect();
    format!("[{}]", items.join(", "))
}

/// Parses a line printed by [`python_list`]'s format.
fn parse_python_list(line: &str) -> Vec<u32> {
    let inner = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')).expect("a bracketed list");
    inner.split(", ").map(|n| n.parse().expect("a number")).collect()
}

#[test]
fn cooperative_prints_what_stackless_prints() {
    assert_eq!(
        stdout_of("cooperative", &[]),
        "Receiving tasklet started\n\
         Sending tasklet started\n\
         send from sending_tasklet\n\
         Receiving tasklet finished\n\
         Just another tasklet in the scheduler\n\
         sending tasklet finished\n"
    );
}

#[test]
fn listing1_prints_1_then_2() {
    assert_eq!(stdout_of("listing1", &[]), "1\n2\n");
}

#[test]
fn listing2_interleaves_before_and_after() {
    assert_eq!(stdout_of("listing2", &[]), "a before\nb before\na after\nb after\n");
}

#[test]
fn sort_with_a_seed_is_reproducible_and_sorted() {
    let sorted: Vec<u32> = (0..20).collect();
    let expected = format!(
        "[5, 1, 14, 6, 2, 0, 15, 9, 13, 19, 7, 11, 18, 16, 17, 12, 4, 8, 10, 3]\nSorting...\n{}\n",
        python_list(&sorted)
    );
    assert_eq!(stdout_of("sort", &["--seed", "42"]), expected);
    assert_eq!(stdout_of("sort", &["--seed=42"]), expected);
}

#[test]
fn sort_sorts_every_shuffle() {
    let sorted: Vec<u32> = (0..20).collect();
    let mut shuffles = Vec::new();
    for seed in ["0", "1", "2", "7", "18446744073709551615"] {
        let out = stdout_of("sort", &["--seed", seed]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "seed {seed}: {out}");
        let mut shuffled = parse_python_list(lines[0]);
        assert_eq!(lines[1], "Sorting...");
        assert_eq!(parse_python_list(lines[2]), sorted, "seed {seed}");
        shuffles.push(shuffled.clone());
        shuffled.sort_unstable();
        assert_eq!(shuffled, sorted, "seed {seed}: the shuffle is a permutation of 0..20");
    }
    shuffles.dedup();
    assert_eq!(shuffles.len(), 5, "different seeds give different shuffles");
}

#[test]
fn sort_without_a_seed_reports_the_clock_seed() {
    let output = run_example("sort", &[]);
    assert!(output.status.success());
    let stderr = String::from_utf8(output.stderr).expect("UTF-8 stderr");
    let seed =
        stderr.split_whitespace().nth(1).unwrap_or_else(|| panic!("stderr names the seed: {stderr:?}"));
    assert_eq!(stderr, format!("seed {seed} (repeat with --seed {seed})\n"));
    let again = stdout_of("sort", &["--seed", seed]);
    assert_eq!(String::from_utf8(output.stdout).expect("UTF-8 output"), again);
}

#[test]
fn sort_rejects_bad_arguments() {
    for args in [&["--seed"][..], &["--seed", "x"], &["--seed=-1"], &["--verbose"]] {
        let output = run_example("sort", args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("usage: sort [--seed N]"), "{args:?}");
    }
}

#[test]
fn network_simulation_delivers_every_packet_once() {
    let expected = r#"packet 1: alice -> dave "hello dave"
  alice forwards packet 1 to hub-a
  hub-a forwards packet 1 to bob
  bob ignores packet 1 (for dave)
  hub-a forwards packet 1 to hub-b
  hub-b forwards packet 1 to carol
  carol forwards packet 1 to dave
  dave receives packet 1 from alice: "hello dave"
  hub-b forwards packet 1 to erin
  erin ignores packet 1 (for dave)
packet 2: dave -> bob "hi bob, dave here"
  dave forwards packet 2 to carol
  carol forwards packet 2 to hub-b
  hub-b forwards packet 2 to hub-a
  hub-a forwards packet 2 to alice
  alice ignores packet 2 (for bob)
  hub-b forwards packet 2 to erin
  erin ignores packet 2 (for bob)
  hub-a forwards packet 2 to bob
  bob receives packet 2 from dave: "hi bob, dave here"
packet 3: erin -> carol "lunch?"
  erin forwards packet 3 to hub-b
  hub-b forwards packet 3 to hub-a
  hub-a forwards packet 3 to alice
  alice ignores packet 3 (for carol)
  hub-b forwards packet 3 to carol
  carol receives packet 3 from erin: "lunch?"
  hub-a forwards packet 3 to bob
  bob ignores packet 3 (for carol)
packet 4: bob -> mallory "anyone there?"
  bob forwards packet 4 to hub-a
  hub-a forwards packet 4 to alice
  alice ignores packet 4 (for mallory)
  hub-a forwards packet 4 to hub-b
  hub-b forwards packet 4 to carol
  carol forwards packet 4 to dave
  dave ignores packet 4 (for mallory)
  hub-b forwards packet 4 to erin
  erin ignores packet 4 (for mallory)
burst: alice -> erin, packets 5 to 7
  alice forwards packet 5 to hub-a
  hub-a forwards packet 5 to bob
  bob ignores packet 5 (for erin)
  alice forwards packet 6 to hub-a
  hub-a forwards packet 5 to hub-b
  hub-b forwards packet 5 to carol
  carol forwards packet 5 to dave
  dave ignores packet 5 (for erin)
  hub-a forwards packet 6 to bob
  bob ignores packet 6 (for erin)
  hub-b forwards packet 5 to erin
  erin receives packet 5 from alice: "one"
  alice forwards packet 7 to hub-a
  hub-a holds packet 6: hub-b is busy
  hub-a forwards packet 6 to hub-b
  hub-b forwards packet 6 to carol
  carol forwards packet 6 to dave
  dave ignores packet 6 (for erin)
  hub-a forwards packet 7 to bob
  bob ignores packet 7 (for erin)
  hub-b forwards packet 6 to erin
  erin receives packet 6 from alice: "two"
  hub-a holds packet 7: hub-b is busy
  hub-a forwards packet 7 to hub-b
  hub-b forwards packet 7 to carol
  carol forwards packet 7 to dave
  dave ignores packet 7 (for erin)
  hub-b forwards packet 7 to erin
  erin receives packet 7 from alice: "three"
shutting down
hub-a forwarded 14 packet(s)
hub-b forwarded 14 packet(s)
alice received 0 packet(s) []
bob received 1 packet(s) [2]
carol received 1 packet(s) [3]
dave received 1 packet(s) [1]
erin received 3 packet(s) [5, 6, 7]
"#;
    assert_eq!(stdout_of("network_simulation", &[]), expected);
}

#[test]
fn examples_are_deterministic() {
    for name in ["cooperative", "listing1", "listing2", "network_simulation"] {
        let first = stdout_of(name, &[]);
        for _ in 0..3 {
            assert_eq!(stdout_of(name, &[]), first, "{name}");
        }
    }
}
