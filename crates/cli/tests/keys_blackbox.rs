//! `tollgate keys create` against a running gateway: a minted key works as
//! soon as its Secret lands next to the configuration (no AIGateway edit),
//! an expired one is refused, and removing a key's Secret revokes it while
//! the others keep working (rotation with overlap).

mod common;

use std::process::Command;

use common::*;

/// Runs `tollgate keys create ARGS`; returns the key and the manifest.
fn mint(args: &[&str]) -> (String, String) {
    let output = Command::new(BIN)
        .args(["keys", "create"])
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    let key = stderr
        .lines()
        .find_map(|l| l.strip_prefix("key: "))
        .expect("the key on stderr")
        .to_string();
    (key, String::from_utf8(output.stdout).unwrap())
}

async fn status_with(data: &str, key: &str) -> u16 {
    client()
        .post(format!("{data}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat_body("chat", "hi", false))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn minted_keys_open_the_gateway_expire_and_are_revoked_with_their_secret() {
    let mock = start_mock();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "gw.yaml",
        &config(mock.url("data"), "mock-chat"),
    );
    let gateway = Process::from_command(&mut gateway_command(dir.path()));
    let (data, admin) = (gateway.url("data"), gateway.url("admin"));

    let (old_key, old) = mint(&["--gateway", "test", "--team", "search", "--app", "ranker"]);
    let (new_key, new) = mint(&["--gateway", "test", "--team", "search", "--app", "ranker"]);
    let (expired_key, expired) = mint(&["--gateway", "*", "--expires-at", "2020-01-01T00:00:00Z"]);
    assert_eq!(status_with(data, &old_key).await, 401, "not minted yet");

    let hash = config_hash(admin).await;
    write(dir.path(), "key-old.yaml", &old);
    write(dir.path(), "key-new.yaml", &new);
    write(dir.path(), "key-expired.yaml", &expired);
    wait_for_new_hash(admin, &hash).await;
    assert_eq!(status_with(data, &old_key).await, 200);
    assert_eq!(
        status_with(data, &new_key).await,
        200,
        "old and new valid together"
    );
    assert_eq!(status_with(data, KEY).await, 200, "spec.apiKeys unchanged");
    let refused = client()
        .post(format!("{data}/v1/chat/completions"))
        .bearer_auth(&expired_key)
        .json(&chat_body("chat", "hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );

    // Rotation: the old key's Secret goes; the new one keeps working.
    let hash = config_hash(admin).await;
    std::fs::remove_file(dir.path().join("key-old.yaml")).unwrap();
    wait_for_new_hash(admin, &hash).await;
    assert_eq!(status_with(data, &old_key).await, 401);
    assert_eq!(status_with(data, &new_key).await, 200);
}

#[test]
fn bad_flags_exit_2_with_a_reason() {
    let output = Command::new(BIN)
        .args(["keys", "create", "--gateway", "g", "--expires-in", "soon"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--expires-in"));
    assert!(output.stdout.is_empty(), "no manifest on failure");
}
