//! The README's first command works from the checkout: the binary it runs reads every valid
//! sample and reports it. (The second command is the one running this test.)

use std::process::Command;

#[test]
fn the_readme_run_command_reads_every_valid_sample() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let run = readme
        .lines()
        .find(|l| l.starts_with("cargo run"))
        .expect("README has a cargo run command");
    assert!(run.contains("-p trucctl -- doc inspect"), "{run}");

    let valid = truc_tests::samples_dir().join("valid");
    let mut files: Vec<_> = std::fs::read_dir(&valid)
        .expect("samples")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 4);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "run", "--quiet", "-p", "trucctl", "--", "doc", "inspect", "--json",
        ])
        .args(&files)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), files.len());
    assert!(lines.iter().all(|l| l.get("error").is_none()));
}
