//! The data directory is tessera's: private whatever the umask, refused when
//! loosened, and never given new keys while its store holds data.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::json;

use crate::helpers::{command, http, open_sled, open_state, spawn, stop, test_config, TestApp};

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Everything at or under `dir`, `dir` included.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if dir.is_dir() {
        for entry in std::fs::read_dir(dir).unwrap() {
            out.extend(entries(&entry.unwrap().path()));
        }
    }
    out
}

fn assert_private(dir: &Path) {
    let all = entries(dir);
    assert!(all.len() > 5, "the server wrote its files: {all:?}");
    for path in all {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&path), want, "{} is {:o}", path.display(), mode(&path));
    }
}

#[test]
fn files_are_private_whatever_the_umask() {
    for umask in [0o000, 0o022] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut cmd = command(&data);
        cmd.stderr(Stdio::null());
        // SAFETY: umask in the child before exec touches nothing shared.
        unsafe {
            cmd.pre_exec(move || {
                libc::umask(umask);
                Ok(())
            });
        }
        let server = spawn(cmd);
        let (status, body) = http(
            server.addr,
            "POST",
            "/auth/setup",
            None,
            Some(&json!({"username": "alice", "password": "alice-password"})),
        );
        assert_eq!(status, 200, "{body}");
        let token = body["token"].as_str().unwrap().to_owned();
        let (status, body) = http(
            server.addr,
            "POST",
            "/api/secrets",
            Some(&token),
            Some(&json!({"name": "S", "value": "v"})),
        );
        assert_eq!(status, 200, "{body}");
        assert_private(&data);
        // What the storage engine writes later (its snapshots on a clean
        // stop) is born private too.
        for i in 0..20 {
            let (status, _) = http(
                server.addr,
                "POST",
                "/api/secrets",
                Some(&token),
                // Near the largest value: sled keeps large values in
                // files of their own.
                Some(&json!({"name": format!("S{i}"), "value": "v".repeat(60_000)})),
            );
            assert_eq!(status, 200);
        }
        stop(server);
        assert_private(&data);
    }
}

/// A data directory the server has run on, closed again.
async fn used_data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let state = open_state(test_config(dir.path())).unwrap();
    let app = TestApp::from_state(state, None);
    app.setup_admin().await;
    app.state.store.flush().unwrap();
    dir
}

#[tokio::test]
async fn a_loosened_directory_is_refused() {
    let dir = used_data_dir().await;
    let config = test_config(dir.path());
    assert_private(dir.path());
    for loosened in [
        dir.path().to_path_buf(),
        config.store_dir(),
        config.keys_dir(),
    ] {
        chmod(&loosened, 0o755);
        let err = open_state(config.clone())
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains(&loosened.display().to_string()) && err.contains("chmod"),
            "{err}"
        );
        chmod(&loosened, 0o700);
    }
    // A loosened key file is refused too.
    let key = config.keys_dir().join("root-1.key");
    chmod(&key, 0o644);
    let err = open_state(config.clone())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("root-1.key") && err.contains("too open"),
        "{err}"
    );
    chmod(&key, 0o600);
    assert!(open_state(config).is_ok());
}

/// A store written before tessera claimed its directory (or a directory the
/// operator created) is made private once, not refused.
#[tokio::test]
async fn an_unclaimed_directory_is_made_private() {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let config = test_config(dir.path());
    {
        let store = open_sled(&config.store_dir());
        let mut tx = tessera::store::Transaction::durable();
        tx.put("meta/schema_version", "3");
        tessera::store::Store::commit(&store, &tx).unwrap();
    }
    tessera::authz::keys::RootKeys::load_or_create(&config.keys_dir()).unwrap();
    tessera::authz::keys::DataKeys::load_or_create(&config.keys_dir()).unwrap();
    chmod(&config.store_dir(), 0o755);
    let state = open_state(config.clone()).unwrap();
    drop(state);
    assert_private(dir.path());
}

#[tokio::test]
async fn missing_keys_for_a_store_with_data_are_refused() {
    let dir = used_data_dir().await;
    let config = test_config(dir.path());
    std::fs::remove_dir_all(config.keys_dir()).unwrap();
    let err = open_state(config.clone())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("holds data")
            && err.contains("no root key")
            && err.contains("tessera restore"),
        "{err}"
    );
    assert!(
        !config.keys_dir().join("root-1.key").exists(),
        "no new key was made"
    );
}

#[tokio::test]
async fn keys_from_another_data_directory_are_refused() {
    let dir = used_data_dir().await;
    let other = used_data_dir().await;
    let config = test_config(dir.path());
    for name in ["root-1.key", "data-1.key"] {
        std::fs::remove_file(config.keys_dir().join(name)).unwrap();
        std::fs::copy(
            test_config(other.path()).keys_dir().join(name),
            config.keys_dir().join(name),
        )
        .unwrap();
        let err = open_state(config.clone())
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("not the one the store was written with"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_rotated_key_is_recorded_and_the_store_keeps_opening() {
    let dir = used_data_dir().await;
    let config = test_config(dir.path());
    let id = tessera::authz::keys::RootKeys::rotate(&config.keys_dir()).unwrap();
    assert_eq!(id, 2);
    drop(open_state(config.clone()).unwrap());
    // Root key 2 is now the store's: replacing it is refused.
    std::fs::remove_file(config.keys_dir().join("root-2.key")).unwrap();
    let err = open_state(config).err().expect("refused").to_string();
    assert!(err.contains("root key 2 is missing"), "{err}");
}
