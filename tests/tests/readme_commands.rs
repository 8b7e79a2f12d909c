//! The README's first command works from the checkout: the demo runs to its summary and its
//! numbers add up. (The second command is the one running this test.)

use std::process::Command;

/// `demo: 8 documents, 11/11 deliveries, 36/36 statuses, 0 lost, in 2.8 s` → the numbers.
fn summary_numbers(line: &str) -> Vec<(u64, Option<u64>)> {
    line.split([',', ' '])
        .filter(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .filter(|w| !w.contains('.'))
        .map(|w| match w.split_once('/') {
            Some((a, b)) => (a.parse().expect("number"), Some(b.parse().expect("number"))),
            None => (w.parse().expect("number"), None),
        })
        .collect()
}

#[test]
fn the_readme_run_command_is_the_demo_and_it_delivers_everything() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let run = readme
        .lines()
        .find(|l| l.starts_with("cargo run"))
        .expect("README has a cargo run command");
    assert_eq!(run.trim(), "cargo run -p trucd -- demo");

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["run", "--quiet", "-p", "trucd", "--", "demo"])
        // The test's variant: stop after the summary, and any free admin port.
        .args(["--exit-after-summary", "--admin-listen", "127.0.0.1:0"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("57 level-2 and 226 level-3 units"),
        "{stdout}"
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("demo: "))
        .unwrap_or_else(|| panic!("no summary line in\n{stdout}"));
    let numbers = summary_numbers(line);
    // Documents, deliveries, statuses, lost.
    assert_eq!(numbers.len(), 4, "{line}");
    assert_eq!(numbers[0], (8, None), "{line}");
    assert_eq!(
        numbers[1],
        (11, Some(11)),
        "every delivery acknowledged: {line}"
    );
    assert_eq!(numbers[2], (36, Some(36)), "every status back: {line}");
    assert_eq!(numbers[3], (0, None), "nothing lost: {line}");
    // The summary table and the timelines come from the relay's store.
    assert!(stdout.contains("Timeline of 000.00.01.G04,"), "{stdout}");
    assert!(stdout.contains("overdue: 1"), "{stdout}");
    let vp = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("000.00.01.G04"))
        .expect("a row for the Văn phòng Bộ");
    let cells: Vec<&str> = vp.split_whitespace().collect();
    // Sent 4 documents, received 1 (from a level-3 unit of the Cục Hàng hải); answered it
    // with 4 statuses (03 to 06); received 16: 3 recipients × 03..06 for its first letter,
    // 01, 03, 04 from the other ministry, and 15 (recall agreed) for the revocation.
    assert_eq!(&cells[cells.len() - 4..], ["4", "1", "4", "16"], "{vp}");
}
