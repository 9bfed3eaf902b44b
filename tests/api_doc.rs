//! Runs every example of `docs/api.md` against a fresh node and compares
//! the answers with the ones the page shows, so the reference cannot drift
//! from the code.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// A runnable example: shell commands and, if the page gives one, the
/// expected answer (`json` or `text`).
struct Example {
    line: usize,
    script: String,
    expected: Option<(String, String)>,
}

fn examples(markdown: &str) -> Vec<Example> {
    let mut blocks: Vec<(usize, String, String)> = Vec::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let Some(lang) = line.strip_prefix("```") else { continue };
        let mut body = String::new();
        for (_, inner) in lines.by_ref() {
            if inner.starts_with("```") {
                break;
            }
            body.push_str(inner);
            body.push('\n');
        }
        blocks.push((n + 1, lang.trim().to_owned(), body));
    }
    let mut examples = Vec::new();
    let mut i = 0;
    while i < blocks.len() {
        let (line, lang, body) = &blocks[i];
        if lang == "sh" {
            let expected = blocks
                .get(i + 1)
                .filter(|(_, next, _)| next == "json" || next == "text")
                .map(|(_, next, body)| (next.clone(), body.clone()));
            if expected.is_some() {
                i += 1;
            }
            examples.push(Example { line: *line, script: body.clone(), expected });
        }
        i += 1;
    }
    examples
}

/// `expected` with `"<any>"` standing for any value; objects must have the
/// same keys, arrays the same length.
fn json_matches(expected: &Value, actual: &Value, path: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::String(s), _) if s == "<any>" => Ok(()),
        (Value::Object(e), Value::Object(a)) => {
            let (mut ek, mut ak): (Vec<_>, Vec<_>) = (e.keys().collect(), a.keys().collect());
            ek.sort();
            ak.sort();
            if ek != ak {
                return Err(format!("{path}: keys {ak:?}, documented {ek:?}"));
            }
            e.iter().try_for_each(|(k, v)| json_matches(v, &a[k], &format!("{path}.{k}")))
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            e.iter().zip(a).enumerate().try_for_each(|(i, (e, a))| json_matches(e, a, &format!("{path}[{i}]")))
        }
        _ if expected == actual => Ok(()),
        _ => Err(format!("{path}: got {actual}, documented {expected}")),
    }
}

/// One line against a documented line where `<any>` matches any run of
/// characters.
fn line_matches(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split("<any>").collect();
    let Some(mut rest) = actual.strip_prefix(parts[0]) else { return false };
    let Some((last, middle)) = parts[1..].split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_in_the_api_reference_answers_as_documented() {
    let cluster = Cluster::start(1, &["--api-key", "secret-key"]);
    cluster.wait_ready(Duration::from_secs(30)).await;
    let base = cluster.nodes[0].url.clone();
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md")).unwrap();
    let examples = examples(&page);
    assert!(examples.len() >= 20, "found only {} examples in docs/api.md", examples.len());
    // The examples run `synap` as a user would: this build's binary first
    // on the PATH.
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_synap")).parent().expect("a directory").to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    for example in examples {
        let (script, base, path) = (example.script.clone(), base.clone(), path.clone());
        let output = tokio::task::spawn_blocking(move || {
            Command::new("bash")
                .args(["-c", &script])
                .env("SYNAP", base)
                .env("SYNAP_API_KEY", "secret-key")
                .env("PATH", &path)
                .output()
                .expect("run bash")
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let at = format!("docs/api.md line {}: {}", example.line, example.script.trim());
        assert!(output.status.success(), "{at}\nexited {}: {}", output.status, String::from_utf8_lossy(&output.stderr));
        match example.expected {
            Some((lang, expected)) if lang == "json" => {
                let expected: Value = serde_json::from_str(&expected).unwrap_or_else(|e| panic!("{at}: bad json: {e}"));
                let actual: Value = serde_json::from_str(&stdout)
                    .unwrap_or_else(|e| panic!("{at}\nanswer is not JSON ({e}): {stdout}"));
                if let Err(difference) = json_matches(&expected, &actual, "$") {
                    panic!("{at}\n{difference}\nfull answer: {actual}");
                }
            }
            Some((_, expected)) => {
                let actual: Vec<&str> = stdout.lines().filter(|l| !l.is_empty() && !l.starts_with(':')).collect();
                let expected: Vec<&str> = expected.lines().filter(|l| !l.is_empty()).collect();
                assert_eq!(actual.len(), expected.len(), "{at}\nanswer:\n{stdout}");
                for (e, a) in expected.iter().zip(&actual) {
                    assert!(line_matches(e, a), "{at}\nline {a:?} does not match documented {e:?}");
                }
            }
            None => {}
        }
    }
}
