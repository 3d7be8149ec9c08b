//! Integration tests of the index crate: the embedder against Python, registration round
//! trips, every rejection path, crash safety (a killed registering process) and reopening.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loramux_index::registry::files::ADAPTER_FILES;
use loramux_index::{
    AcceptAll, AdapterId, AdapterValidator, BertEmbedder, BertEmbedderConfig, ConfigSummary,
    Embedder, EmbedderBackend, IndexError, IndexState, MatmulKind, NewAdapter, Registry,
    RegistryConfig, ValidationError,
};

/// A deterministic bag-of-words embedder: fast, needs no model files, and similar texts
/// (shared words) get similar vectors, which is all the registry tests need.
struct WordsEmbedder;

impl Embedder for WordsEmbedder {
    fn id(&self) -> &str {
        "test-words-64"
    }
    fn dim(&self) -> usize {
        64
    }
    fn embed(&self, texts: &[&str]) -> loramux_index::Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0f32; 64];
                for w in t
                    .to_lowercase()
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                {
                    let h = w.bytes().fold(1469598103934665603u64, |h, b| {
                        (h ^ b as u64).wrapping_mul(1099511628211)
                    });
                    v[(h % 64) as usize] += 1.0;
                }
                loramux_index::embed::l2_normalize(&mut v);
                v
            })
            .collect())
    }
}

fn summary() -> ConfigSummary {
    ConfigSummary {
        rank: 8,
        alpha: 16.0,
        use_rslora: false,
        target_modules: vec!["q_proj".into(), "v_proj".into()],
        layers: 30,
        base_model: None,
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    sources: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("registry");
        let sources = tmp.path().join("sources");
        std::fs::create_dir_all(&sources).unwrap();
        Self {
            _tmp: tmp,
            root,
            sources,
        }
    }

    /// A fake PEFT folder (the AcceptAll validator does not read it).
    fn adapter(&self, name: &str, payload: &str) -> PathBuf {
        let dir = self.sources.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ADAPTER_FILES {
            std::fs::write(dir.join(f), format!("{f}:{payload}")).unwrap();
        }
        dir
    }

    fn config(&self) -> RegistryConfig {
        RegistryConfig {
            allowed_roots: vec![self.sources.clone()],
            ..Default::default()
        }
    }

    fn open(&self) -> Registry {
        Registry::open(&self.root, self.config(), Arc::new(WordsEmbedder)).unwrap()
    }

    fn request(
        &self,
        id: &str,
        source: PathBuf,
        description: &str,
        examples: &[&str],
    ) -> NewAdapter {
        NewAdapter {
            id: AdapterId::new(id).unwrap(),
            source,
            description: description.into(),
            examples: examples.iter().map(|s| s.to_string()).collect(),
            tags: vec!["test".into()],
            replace: false,
        }
    }

    /// Folder names under `adapters/`.
    fn folders(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root.join("adapters"))
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

fn key(s: &str) -> AdapterId {
    AdapterId::new(s).unwrap()
}

/// Registry and index agree, and every recorded folder exists with its recorded files.
fn assert_consistent(reg: &Registry) {
    let records = reg.list().unwrap();
    assert_eq!(records.len(), reg.index().len());
    for r in &records {
        assert!(
            reg.index().contains(&r.id),
            "{} missing from the index",
            r.id
        );
        reg.verify(&r.id).unwrap();
    }
    let mut folders: Vec<String> = std::fs::read_dir(reg.adapters_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    let mut expected: Vec<String> = records.iter().map(|r| r.folder.clone()).collect();
    expected.sort();
    assert_eq!(folders, expected, "folders on disk vs rows");
}

#[test]
fn registration_round_trip_survives_reopen() {
    let fx = Fixture::new();
    let src = fx.adapter("sql", "w1");
    let fresh = fx.open();
    assert!(matches!(
        fresh.open_report().index,
        IndexState::Rebuilt { .. }
    ));
    drop(fresh);
    let mut reg = fx.open();
    assert_eq!(
        reg.open_report().index,
        IndexState::Loaded,
        "an empty index is saved too"
    );
    let rec = reg
        .register(
            fx.request(
                "sql",
                src,
                "writes SQL queries",
                &["select customers by region", "join orders with customers"],
            ),
            &AcceptAll(summary()),
        )
        .unwrap();
    assert_eq!(rec.id, key("sql"));
    assert_eq!(rec.examples.len(), 2);
    assert_eq!(rec.tags, ["test"]);
    assert_eq!(rec.config, summary());
    assert_eq!(rec.files.len(), 2);
    assert!(rec.files.iter().all(|f| f.sha256.len() == 64));
    assert!(rec.folder.starts_with("sql@"));
    assert!(reg
        .adapter_dir(&rec)
        .join("adapter_model.safetensors")
        .is_file());
    let src2 = fx.adapter("poem", "w2");
    reg.register(
        fx.request("poem", src2, "writes poems", &["a haiku about autumn rain"]),
        &AcceptAll(summary()),
    )
    .unwrap();
    let hits = reg
        .index()
        .search(
            &WordsEmbedder
                .embed_one("join orders with customers")
                .unwrap(),
            3,
        )
        .unwrap();
    assert_eq!(hits[0].key, key("sql"));
    assert_consistent(&reg);
    let generation = reg.generation();
    drop(reg);

    let reg = fx.open();
    assert_eq!(reg.open_report().index, IndexState::Loaded);
    assert!(reg.open_report().swept.is_empty());
    assert_eq!(reg.generation(), generation);
    assert_eq!(reg.get(&key("sql")).unwrap(), rec);
    let hits = reg
        .index()
        .search(&WordsEmbedder.embed_one("haiku autumn").unwrap(), 1)
        .unwrap();
    assert_eq!(hits[0].key, key("poem"));
    assert_consistent(&reg);
}

#[test]
fn replace_remove_and_checksums() {
    let fx = Fixture::new();
    let mut reg = fx.open();
    let src = fx.adapter("a", "v1");
    let v1 = reg
        .register(
            fx.request("a", src.clone(), "first", &["alpha"]),
            &AcceptAll(summary()),
        )
        .unwrap();

    let err = reg
        .register(
            fx.request("a", src.clone(), "second", &["beta"]),
            &AcceptAll(summary()),
        )
        .unwrap_err();
    assert!(matches!(err, IndexError::Duplicate { .. }), "{err}");

    let src = fx.adapter("a", "v2");
    let mut again = fx.request("a", src, "second", &["beta"]);
    again.replace = true;
    let v2 = reg.register(again, &AcceptAll(summary())).unwrap();
    assert_ne!(v1.folder, v2.folder);
    assert_ne!(v1.files, v2.files);
    assert_eq!(v1.created_at_ms, v2.created_at_ms);
    assert!(v2.revision > v1.revision);
    let hits = reg
        .index()
        .search(&WordsEmbedder.embed_one("alpha").unwrap(), 5)
        .unwrap();
    assert!(
        hits.iter().all(|h| h.similarity < 0.5),
        "old vectors still found: {hits:?}"
    );
    assert_consistent(&reg);

    // A file changed behind the registry's back is caught.
    std::fs::write(reg.adapter_dir(&v2).join("adapter_config.json"), "tampered").unwrap();
    assert!(matches!(
        reg.verify(&key("a")),
        Err(IndexError::Checksum { .. })
    ));

    reg.remove(&key("a")).unwrap();
    assert!(matches!(
        reg.remove(&key("a")),
        Err(IndexError::NotFound { .. })
    ));
    assert!(matches!(
        reg.get(&key("a")),
        Err(IndexError::NotFound { .. })
    ));
    assert!(reg.index().is_empty());
    assert!(fx.folders().is_empty(), "{:?}", fx.folders());
}

struct Refuse;

impl AdapterValidator for Refuse {
    fn validate(&self, _: &AdapterId, dir: &Path) -> Result<ConfigSummary, ValidationError> {
        assert!(
            dir.join("adapter_model.safetensors").is_file(),
            "the validator sees the staged copy"
        );
        Err(ValidationError {
            reason: "tensor lora_A has rank 3, expected 8".into(),
        })
    }
}

#[test]
fn every_rejection_leaves_no_trace() {
    let fx = Fixture::new();
    let mut reg = fx.open();
    let good = fx.adapter("good", "x");
    reg.register(
        fx.request("taken", good.clone(), "already here", &[]),
        &AcceptAll(summary()),
    )
    .unwrap();
    let before = (reg.list().unwrap(), reg.generation(), fx.folders());

    let outside = tempfile::tempdir().unwrap();
    for f in ADAPTER_FILES {
        std::fs::write(outside.path().join(f), "x").unwrap();
    }
    let missing = fx.sources.join("empty");
    std::fs::create_dir_all(&missing).unwrap();
    let partial = fx.sources.join("partial");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("adapter_config.json"), "{}").unwrap();
    let sneaky = fx.sources.join("sneaky");
    std::fs::create_dir_all(&sneaky).unwrap();
    std::fs::write(sneaky.join("adapter_config.json"), "{}").unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("adapter_model.safetensors"),
        sneaky.join("adapter_model.safetensors"),
    )
    .unwrap();

    type Case<'a> = (
        &'a str,
        NewAdapter,
        &'a dyn AdapterValidator,
        fn(&IndexError) -> bool,
    );
    let accept = AcceptAll(summary());
    let cases: Vec<Case> = vec![
        (
            "outside the roots",
            fx.request("o", outside.path().to_path_buf(), "d", &[]),
            &accept,
            |e| matches!(e, IndexError::OutsideRoots { .. }),
        ),
        (
            "`..` escape",
            fx.request("o", fx.sources.join("..").join(".."), "d", &[]),
            &accept,
            |e| matches!(e, IndexError::OutsideRoots { .. }),
        ),
        (
            "symlinked file outside",
            fx.request("o", sneaky, "d", &[]),
            &accept,
            |e| matches!(e, IndexError::OutsideRoots { .. }),
        ),
        (
            "no such folder",
            fx.request("o", fx.sources.join("nope"), "d", &[]),
            &accept,
            |e| matches!(e, IndexError::BadSource { .. }),
        ),
        (
            "no files",
            fx.request("o", missing, "d", &[]),
            &accept,
            |e| matches!(e, IndexError::BadSource { .. }),
        ),
        (
            "weights missing",
            fx.request("o", partial, "d", &[]),
            &accept,
            |e| matches!(e, IndexError::BadSource { .. }),
        ),
        (
            "duplicate id",
            fx.request("taken", good.clone(), "d", &[]),
            &accept,
            |e| matches!(e, IndexError::Duplicate { .. }),
        ),
        (
            "validator refuses",
            fx.request("o", good.clone(), "d", &[]),
            &Refuse,
            |e| matches!(e, IndexError::Invalid { .. }) && e.to_string().contains("rank 3"),
        ),
        (
            "empty description",
            fx.request("o", good.clone(), " ", &[]),
            &accept,
            |e| matches!(e, IndexError::BadMetadata { .. }),
        ),
        (
            "empty example",
            fx.request("o", good.clone(), "d", &["ok", ""]),
            &accept,
            |e| matches!(e, IndexError::BadMetadata { .. }),
        ),
    ];
    for (name, request, validator, expected) in cases {
        let err = reg.register(request, validator).unwrap_err();
        assert!(expected(&err), "{name}: unexpected {err}");
        assert_eq!(
            (reg.list().unwrap(), reg.generation(), fx.folders()),
            before,
            "{name} left a trace"
        );
    }
    for bad in ["", "UPPER", "../x", "a/b", "base id", &"x".repeat(65)] {
        assert!(
            matches!(
                AdapterId::new(bad),
                Err(loramux_types::InvalidAdapterId { .. })
            ),
            "{bad:?}"
        );
    }
    assert_consistent(&reg);
}

#[test]
fn reopen_repairs_interrupted_states() {
    let fx = Fixture::new();
    let mut reg = fx.open();
    // Five adapters, so dropping one stays under the compaction threshold (patch, not rebuild).
    for name in ["a", "b", "c", "d", "e"] {
        let src = fx.adapter(name, name);
        reg.register(
            fx.request(
                name,
                src,
                &format!("adapter {name}"),
                &[&format!("example {name}")],
            ),
            &AcceptAll(summary()),
        )
        .unwrap();
    }
    let b = reg.get(&key("b")).unwrap();
    drop(reg);
    let adapters = fx.root.join("adapters");
    // Killed after the rename, before the commit: a folder no row names.
    std::fs::create_dir_all(adapters.join("ghost@abc123")).unwrap();
    // Killed while copying, by a process that is gone.
    std::fs::create_dir_all(adapters.join(".staging-4000000000-zz")).unwrap();
    // Files deleted by hand.
    std::fs::remove_dir_all(adapters.join(&b.folder)).unwrap();

    let reg = fx.open();
    let report = reg.open_report();
    assert_eq!(report.swept.len(), 2, "{report:?}");
    assert_eq!(report.dropped, [key("b")]);
    assert_eq!(
        report.index,
        IndexState::Updated {
            added: 0,
            removed: 1
        }
    );
    assert_consistent(&reg);
    drop(reg);

    // A saved index that is missing or garbage is rebuilt from the catalog.
    std::fs::write(fx.root.join("index").join("manifest.json"), "{not json").unwrap();
    let reg = fx.open();
    assert!(matches!(
        reg.open_report().index,
        IndexState::Rebuilt { .. }
    ));
    assert_consistent(&reg);
    let hits = reg
        .index()
        .search(&WordsEmbedder.embed_one("example c").unwrap(), 1)
        .unwrap();
    assert_eq!(hits[0].key, key("c"));
}

#[test]
fn a_damaged_flat_index_file_is_rebuilt_and_inserts_work_after_a_reload() {
    let fx = Fixture::new();
    let mut reg = fx.open();
    let register = |reg: &mut Registry, name: &str| {
        let src = fx.adapter(name, name);
        let example = format!("example {name}");
        reg.register(
            fx.request(name, src, &format!("adapter {name}"), &[&example]),
            &AcceptAll(summary()),
        )
        .unwrap();
    };
    for name in ["a", "b", "c"] {
        register(&mut reg, name);
    }
    drop(reg);
    let top = |reg: &Registry, text: &str| {
        let q = WordsEmbedder.embed_one(text).unwrap();
        reg.index().search(&q, 1).unwrap()[0].key.clone()
    };

    // A clean reopen loads the saved index; a registration after it (hnsw_rs's graph is
    // read back only then) is found, now and after another reopen.
    let mut reg = fx.open();
    assert_eq!(reg.open_report().index, IndexState::Loaded);
    register(&mut reg, "d");
    assert_eq!(top(&reg, "example d"), key("d"));
    drop(reg);
    let reg = fx.open();
    assert_eq!(reg.open_report().index, IndexState::Loaded);
    assert_eq!(top(&reg, "example d"), key("d"));
    drop(reg);

    // One flipped byte in the flat file: the registry rebuilds the index from the catalog.
    let flat: Vec<PathBuf> = std::fs::read_dir(fx.root.join("index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "flat"))
        .collect();
    assert_eq!(flat.len(), 1, "{flat:?}");
    let mut bytes = std::fs::read(&flat[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&flat[0], &bytes).unwrap();
    let reg = fx.open();
    match &reg.open_report().index {
        IndexState::Rebuilt { reason } => assert!(reason.contains("checksum"), "{reason}"),
        other => panic!("expected a rebuild, got {other:?}"),
    }
    assert_consistent(&reg);
    assert_eq!(top(&reg, "example c"), key("c"));
}

const CHILD_ENV: &str = "LORAMUX_TEST_KILL_DIR";

/// A validator that signals it runs, then hangs until the process is killed.
struct Hang(PathBuf);

impl AdapterValidator for Hang {
    fn validate(&self, _: &AdapterId, _: &Path) -> Result<ConfigSummary, ValidationError> {
        std::fs::write(&self.0, "validating").unwrap();
        std::thread::sleep(Duration::from_secs(120));
        Ok(summary())
    }
}

/// Run only as the child of `a_killed_registration_leaves_nothing_behind`.
#[test]
#[ignore = "child process of a crash test"]
fn child_registers_and_hangs() {
    let Some(dir) = std::env::var_os(CHILD_ENV).map(PathBuf::from) else {
        return;
    };
    let fx = Fixture {
        _tmp: tempfile::tempdir().unwrap(),
        root: dir.join("registry"),
        sources: dir.join("sources"),
    };
    let mut reg = fx.open();
    let req = fx.request(
        "doomed",
        fx.sources.join("doomed"),
        "never finished",
        &["lost example"],
    );
    let _ = reg.register(req, &Hang(dir.join("ready")));
}

#[test]
fn a_killed_registration_leaves_nothing_behind() {
    let fx = Fixture::new();
    let src = fx.adapter("kept", "k");
    fx.adapter("doomed", "d");
    let mut reg = fx.open();
    reg.register(
        fx.request("kept", src, "survives", &["still here"]),
        &AcceptAll(summary()),
    )
    .unwrap();
    drop(reg);

    let dir = fx.root.parent().unwrap().to_path_buf();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_registers_and_hangs",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, &dir)
        .spawn()
        .unwrap();
    let ready = dir.join("ready");
    let start = Instant::now();
    while !ready.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the child never reached validation"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the child exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Mid-registration: files staged, nothing committed.
    assert!(
        fx.folders().iter().any(|f| f.starts_with(".staging-")),
        "{:?}",
        fx.folders()
    );
    child.kill().unwrap();
    child.wait().unwrap();

    let reg = fx.open();
    assert_eq!(reg.open_report().swept.len(), 1);
    let ids: Vec<String> = reg
        .list()
        .unwrap()
        .into_iter()
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(ids, ["kept"]);
    assert_consistent(&reg);
}

fn embedder_dir() -> Option<PathBuf> {
    let home = std::env::var_os("LORAMUX_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache")
                .join("loramux")
        });
    let dir = home.join("models").join("all-minilm-l6-v2");
    if dir.join("model.safetensors").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: embedder files not found in {} (run `loramux models fetch`)",
            dir.display()
        );
        None
    }
}

/// Every backend this CPU can run, with the cosine it must reach against the f32 reference:
/// the f32 paths differ from it by rounding order only, AMX rounds matmul inputs to bf16.
fn backends() -> Vec<(EmbedderBackend, f32)> {
    let mut all = vec![
        (EmbedderBackend::Candle, 0.99999),
        (EmbedderBackend::Host(MatmulKind::F32), 0.99999),
    ];
    if MatmulKind::AmxBf16.usable() {
        all.push((EmbedderBackend::Host(MatmulKind::AmxBf16), 0.9995));
    } else {
        eprintln!("no AMX-BF16 here: the AMX backend is not checked");
    }
    all
}

fn load_backend(dir: &Path, backend: EmbedderBackend) -> BertEmbedder {
    let config = BertEmbedderConfig {
        backend,
        ..BertEmbedderConfig::default()
    };
    BertEmbedder::load(dir, config).unwrap()
}

#[test]
fn bert_embedder_matches_sentence_transformers() {
    let Some(dir) = embedder_dir() else { return };
    #[derive(serde::Deserialize)]
    struct Reference {
        texts: Vec<String>,
        embeddings: Vec<Vec<f32>>,
    }
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_reference.json"),
    )
    .unwrap();
    let reference: Reference = serde_json::from_str(&text).unwrap();
    let texts: Vec<&str> = reference.texts.iter().map(String::as_str).collect();
    for (backend, _) in backends() {
        let emb = load_backend(&dir, backend);
        assert_eq!(emb.dim(), 384);
        // Batched (mixed lengths) and one by one must both match.
        let batched = emb.embed(&texts).unwrap();
        for (i, (got, want)) in batched.iter().zip(&reference.embeddings).enumerate() {
            let cos = loramux_index::embed::dot(got, want);
            assert!(cos >= 0.999, "{backend:?} text {i}: cosine {cos}");
            let single = emb.embed_one(texts[i]).unwrap();
            assert!(loramux_index::embed::dot(&single, want) >= 0.999);
            let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4);
        }
    }
}

/// The host encoder against candle's BERT on texts of many lengths (1 to 256 tokens, the
/// truncation limit), batched together: the f32 path must agree to rounding, the AMX path
/// to bf16 precision, and the default backend must be the fastest one usable.
#[test]
fn host_encoder_matches_candle_on_varied_texts() {
    let Some(dir) = embedder_dir() else { return };
    let words = [
        "route",
        "adapter",
        "the",
        "SQL",
        "query",
        "translate",
        "poem",
        "ünïcödé",
        "42",
        "JSON",
        "summarize",
        "invoice",
        "quickly",
        "😀",
        "dates",
        "—",
        "sort",
        "numbers",
    ];
    let texts: Vec<String> = [1usize, 2, 5, 17, 40, 90, 130, 400]
        .iter()
        .enumerate()
        .map(|(seed, &n)| {
            (0..n)
                .map(|i| words[(i * 7 + seed * 3 + i * i) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let want = load_backend(&dir, EmbedderBackend::Candle)
        .embed(&refs)
        .unwrap();
    for (backend, min_cos) in backends().into_iter().skip(1) {
        let got = load_backend(&dir, backend).embed(&refs).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let cos = loramux_index::embed::dot(g, w);
            assert!(
                cos >= min_cos,
                "{backend:?} text {i}: cosine {cos} < {min_cos}"
            );
        }
    }
    let default = BertEmbedder::load(&dir, BertEmbedderConfig::default()).unwrap();
    let expected = if MatmulKind::AmxBf16.usable() {
        "host-amx-bf16"
    } else {
        "host-f32"
    };
    if std::env::var_os("LORAMUX_EMBEDDER").is_none()
        && std::env::var_os("LORAMUX_EMBED_MATMUL").is_none()
    {
        assert_eq!(default.backend_name(), expected);
    }
}
