//! A real clamd whose signatures a test changes (the rescan clamd `scripts/test` starts): a
//! signature for a random marker, loaded with RELOAD, finds files stored clean before.

use std::time::{Duration, Instant};

use super::noise;

pub fn rescan_clamd() -> (String, std::path::PathBuf) {
    let address = std::env::var("PF_TEST_CLAMD_RESCAN").expect(
        "PF_TEST_CLAMD_RESCAN is not set: run the suite with scripts/test, which starts a clamd for the rescan tests",
    );
    let db = std::env::var("PF_TEST_CLAMD_RESCAN_DB").expect("PF_TEST_CLAMD_RESCAN_DB is not set");
    (address, db.into())
}

/// A marker no file has by chance, and the name of the signature that will find it.
pub fn marker() -> (Vec<u8>, String) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    (
        format!("pf-rescan-marker-{id}").into_bytes(),
        format!("Pf-Marker-{}", &id[..12]),
    )
}

/// Adds a signature for `marker` to the rescan clamd's database, RELOADs it, and waits until
/// clamd finds the marker.
pub async fn teach_clamd(marker: &[u8], name: &str) {
    let (address, db) = rescan_clamd();
    std::fs::write(
        db.join(format!("{name}.ndb")),
        format!("{name}:0:*:{}\n", hex::encode(marker)),
    )
    .unwrap();
    let host = address.trim_start_matches("tcp://").to_owned();
    let tcp = clamav_client::tokio::Tcp {
        host_address: host.as_str(),
    };
    let reply = clamav_client::tokio::reload(tcp).await.unwrap();
    assert!(reply.starts_with(b"RELOADING"), "{reply:?}");
    let start = Instant::now();
    loop {
        let tcp = clamav_client::tokio::Tcp {
            host_address: host.as_str(),
        };
        if let Ok(reply) = clamav_client::tokio::scan_buffer(marker, tcp, None).await
            && String::from_utf8_lossy(&reply).contains(name)
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_mins(1),
            "clamd did not load the new signature"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn with_marker(len: usize, seed: u64, marker: &[u8]) -> Vec<u8> {
    let mut v = noise(len, seed);
    let at = len / 2;
    v[at..at + marker.len()].copy_from_slice(marker);
    v
}
