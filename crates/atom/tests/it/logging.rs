//! One structured line per request, no credentials in any line, panics logged with their
//! location.

use std::time::Duration;

use serde_json::Value;

use crate::common::{CapturedLogs, TestApp, TestDb, atom_command, free_port, wait_until_healthy};
use crate::errors::test_routes;

// A current-thread runtime (tokio::test's default) runs the server on this thread, so the
// thread-local subscriber below sees everything the server logs.
#[tokio::test]
async fn a_panic_is_logged_with_its_location() {
    atom::telemetry::install_panic_hook();
    let (captured, _guard) = CapturedLogs::install();

    let app = TestApp::spawn_with(&[], test_routes()).await;
    assert_eq!(app.get("/test/panic").await.status(), 500);
    app.stop().await;

    let logs = captured.text();
    let panic_line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["panic.message"] == "deliberate test panic")
        .unwrap_or_else(|| panic!("panic logged:\n{logs}"));
    let location = panic_line["fields"]["panic.location"].as_str().unwrap_or("");
    assert!(location.contains("tests/it/errors.rs:"), "location logged: {location}");
}

#[tokio::test]
async fn request_lines_are_structured_and_never_carry_credentials() {
    let db = TestDb::new().await;
    let port = free_port().await;
    let mut env = db.pairs();
    env.extend(crate::common::pairs(&[
        ("LISTEN", &format!("127.0.0.1:{port}")),
        ("LOG_FORMAT", "json"),
        ("LOG", "debug"),
    ]));
    let child = atom_command(&env).arg("serve").spawn().expect("atom starts");
    let base = format!("http://127.0.0.1:{port}");
    wait_until_healthy(&format!("{base}/health"), Duration::from_secs(30)).await;

    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    let requests = [
        client.get(format!("{base}/health")).header("authorization", "Bearer sekrit-AUTH-1"),
        client.get(format!("{base}/ready")).header("cookie", "session=sekrit-COOKIE-2"),
        client.get(format!("{base}/health?access_token=sekrit-QUERY-3&code=sekrit-CODE-4&refresh_token=sekrit-5")),
        client.get(format!("{base}/nope?token=sekrit-TOKEN-6")).header("x-api-key", "sekrit-KEY-7"),
        client.post(format!("{base}/health?client_secret=sekrit-8")).body("password=sekrit-BODY-9"),
        // A credential in the path (a key pasted where its id belongs) is redacted.
        client.delete(format!("{base}/v1/api-keys/atom_sk_sekritPATHkey10AbCdEfGhIjKlMnOpQrStUvWxYz012")),
    ];
    for request in requests {
        let response = request.send().await.expect("sent");
        ids.push((response.headers()["x-request-id"].to_str().expect("ascii").to_owned(), response.status().as_u16()));
    }

    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(status.success());
    let output = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("exits after SIGTERM")
        .expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stdout.contains("sekrit") && !stderr.contains("sekrit"),
        "a credential reached the log:\n{stdout}\n{stderr}"
    );

    // Every line, the first and the last included, is one JSON object.
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(line) if line.is_object() => line,
            _ => panic!("a log line that is not a JSON object: {l:?}\n{stdout}"),
        })
        .collect();
    assert!(!lines.is_empty(), "the server logged");
    for (id, status) in ids {
        let matching: Vec<&Value> = lines.iter().filter(|l| l["request_id"] == id.as_str()).collect();
        assert_eq!(matching.len(), 1, "one line for request {id}:\n{stdout}");
        let line = matching[0];
        assert_eq!(line["message"], "request");
        assert_eq!(line["status"], status);
        assert!(line["method"].is_string() && line["route"].is_string() && line["path"].is_string(), "{line}");
        assert!(line["latency_ms"].is_number(), "{line}");
    }
    let health_line = lines.iter().find(|l| l["path"] == "/health" && l["status"] == 200).expect("health line");
    assert_eq!(health_line["route"], "/health", "route template logged");
}
