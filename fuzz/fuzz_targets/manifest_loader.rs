//! The standalone YAML loader and the compiler behind it: any text, then
//! the snapshots compiled from whatever loaded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_config::load::{Loaded, add_documents};
use tollgate_config::push::{Received, decode_server_line, snapshot_frame};
use tollgate_config::{Snapshot, compile};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut loaded = Loaded::default();
    // Some `${NAME}`s set, some not, so both paths are exercised.
    let env = |name: &str| (name.len() % 2 == 0).then(|| format!("v-{name}"));
    add_documents(&mut loaded, "f.yaml", text, &env);
    let compiled = compile(&loaded.resources);
    for snapshot in compiled.snapshots.values() {
        // Compile output always passes the checks a gateway makes, and
        // survives the trip to the gateway.
        snapshot
            .validate()
            .expect("compiled snapshot fails validation");
        let json = snapshot.to_json().expect("snapshot does not encode");
        assert_eq!(
            &Snapshot::from_json(&json).expect("snapshot does not decode"),
            snapshot
        );
        let frame = snapshot_frame(snapshot).expect("snapshot frame");
        dump(&frame);
        match decode_server_line(frame.strip_suffix(b"\n").expect("newline")) {
            Ok(Received::Snapshot(again)) => assert_eq!(&*again, snapshot),
            other => panic!("snapshot frame decodes as {other:?}"),
        }
    }
});

/// With `TOLLGATE_FUZZ_DUMP_FRAMES=<dir>`, writes each snapshot frame there:
/// how the push_protocol seeds (which need a valid hash) are made.
fn dump(frame: &[u8]) {
    static DIR: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if let Some(dir) = DIR.get_or_init(|| std::env::var("TOLLGATE_FUZZ_DUMP_FRAMES").ok()) {
        let name = format!("{dir}/frame-{}", frame.len());
        // Two split-seed bytes first, as push_protocol reads them.
        std::fs::write(name, [b"\x20\x00", frame].concat()).expect("write frame");
    }
}
