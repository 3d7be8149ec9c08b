//! Integration tests of the router: retrieval quality on held-out paraphrases (with the
//! real embedder), explicit choices, the route cache, and PEFT validation of real adapters.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use loramux_index::registry::files::ADAPTER_FILES;
use loramux_index::{
    AcceptAll, AdapterId, BertEmbedder, BertEmbedderConfig, ConfigSummary, Embedder, IndexError,
    NewAdapter, Registry, RegistryConfig,
};
use loramux_router::{
    Choice, PeftValidator, RetrievalConfig, RoutePlan, Router, RouterConfig, RouterError,
};
use loramux_runtime::ModelConfig;

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

/// Counts calls, to see the cache at work.
struct Counting<E> {
    inner: E,
    calls: Arc<AtomicUsize>,
}

impl<E: Embedder> Embedder for Counting<E> {
    fn id(&self) -> &str {
        self.inner.id()
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn embed(&self, texts: &[&str]) -> loramux_index::Result<Vec<Vec<f32>>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.embed(texts)
    }
}

fn summary() -> ConfigSummary {
    ConfigSummary {
        rank: 8,
        alpha: 16.0,
        use_rslora: false,
        target_modules: vec!["q_proj".into()],
        layers: 30,
        base_model: None,
    }
}

fn id(s: &str) -> AdapterId {
    AdapterId::new(s).unwrap()
}

/// (id, description, examples, held-out paraphrases that must route to it)
const DOMAINS: &[(&str, &str, &[&str], &[&str])] = &[
    (
        "sql",
        "Writes and explains SQL queries for relational databases.",
        &[
            "Write a query that returns the ten customers with the highest total order value.",
            "How do I join the orders table with the customers table?",
            "Count rows per day in the events table.",
            "Why is my GROUP BY query returning duplicate rows?",
            "Create an index to speed up lookups by email.",
        ],
        &[
            "Give me a SELECT statement that sums revenue for each region from the sales table.",
            "My Postgres query with a LEFT JOIN is slow, how can I fix it?",
            "Find all users who never placed an order, in SQL.",
        ],
    ),
    (
        "poetry",
        "Writes poems, haiku and song lyrics.",
        &[
            "Write a haiku about the first snow of winter.",
            "Compose a sonnet about lost love.",
            "A short rhyming poem for a child's birthday.",
            "Write lyrics for a folk song about the sea.",
            "A free verse poem about city lights at night.",
        ],
        &[
            "Could you pen a few verses about autumn leaves falling?",
            "I need a little rhyme to put in a wedding card.",
            "Write me a poem about the moon over the mountains.",
        ],
    ),
    (
        "cooking",
        "Gives recipes and cooking advice.",
        &[
            "How long should I roast a whole chicken?",
            "Give me a recipe for vegetarian lasagna.",
            "What can I cook with rice, eggs and spinach?",
            "How do I make bread dough rise faster?",
            "A quick weeknight pasta sauce recipe.",
        ],
        &[
            "What temperature do I bake chocolate chip cookies at?",
            "Suggest a dinner I can make with leftover potatoes and cheese.",
            "How do I keep my risotto from getting gluey?",
        ],
    ),
    (
        "python",
        "Helps write, debug and explain Python code.",
        &[
            "Why do I get an IndentationError in my Python script?",
            "Write a Python function that reverses a linked list.",
            "How do I read a CSV file with pandas?",
            "Explain list comprehensions in Python.",
            "My pip install fails with a permission error.",
        ],
        &[
            "How can I sort a dictionary by its values in Python?",
            "Fix this traceback: TypeError: 'NoneType' object is not iterable",
            "Write a Python script that renames every file in a folder.",
        ],
    ),
    (
        "legal",
        "Explains contracts, leases and legal terms in plain language.",
        &[
            "What does an indemnification clause mean in a contract?",
            "Can my landlord keep my security deposit?",
            "Explain what a non-compete agreement restricts.",
            "What is the difference between a will and a trust?",
            "How do I terminate a lease early?",
        ],
        &[
            "Is a verbal agreement legally binding?",
            "My employment contract has an arbitration clause, what does that mean for me?",
            "What rights does a tenant have if the heating breaks?",
        ],
    ),
    (
        "fitness",
        "Designs workout plans and gives exercise advice.",
        &[
            "Make me a three day a week beginner strength routine.",
            "How many push-ups should I do to build chest muscle?",
            "What stretches help after running?",
            "Plan a 30 minute home workout with no equipment.",
            "How do I train for my first 10k race?",
        ],
        &[
            "What exercises strengthen the lower back?",
            "Give me a weekly plan to get better at pull-ups.",
            "How should I warm up before lifting heavy weights?",
        ],
    ),
];

struct Setup {
    _tmp: tempfile::TempDir,
    router: Router,
    calls: Arc<AtomicUsize>,
    sources: PathBuf,
}

fn setup(dir: &Path) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let sources = tmp.path().join("sources");
    let calls = Arc::new(AtomicUsize::new(0));
    let embedder = BertEmbedder::load(dir, BertEmbedderConfig::default()).unwrap();
    let embedder = Arc::new(Counting {
        inner: embedder,
        calls: calls.clone(),
    });
    let config = RegistryConfig {
        allowed_roots: vec![sources.clone()],
        ..Default::default()
    };
    let mut registry = Registry::open(&tmp.path().join("registry"), config, embedder).unwrap();
    for (name, description, examples, _) in DOMAINS {
        let src = sources.join(name);
        std::fs::create_dir_all(&src).unwrap();
        for f in ADAPTER_FILES {
            std::fs::write(src.join(f), name).unwrap();
        }
        let request = NewAdapter {
            id: AdapterId::new(name).unwrap(),
            source: src,
            description: description.to_string(),
            examples: examples.iter().map(|s| s.to_string()).collect(),
            tags: vec![],
            replace: false,
        };
        registry.register(request, &AcceptAll(summary())).unwrap();
    }
    let router = Router::new(Arc::new(RwLock::new(registry)), RouterConfig::default()).unwrap();
    Setup {
        _tmp: tmp,
        router,
        calls,
        sources,
    }
}

#[test]
fn retrieval_routes_held_out_paraphrases_to_the_right_adapter() {
    let Some(dir) = embedder_dir() else { return };
    let s = setup(&dir);
    let mut wrong = Vec::new();
    for (name, _, _, held_out) in DOMAINS {
        for prompt in *held_out {
            match s.router.route(prompt).unwrap() {
                RoutePlan::Auto { candidates, top_k } => {
                    assert!(top_k >= 1 && candidates.len() <= 3);
                    let total: f32 = candidates.iter().map(|c| c.prior).sum();
                    assert!((total - 1.0).abs() < 1e-5);
                    assert!(candidates
                        .windows(2)
                        .all(|w| w[0].similarity >= w[1].similarity));
                    if candidates[0].id.as_str() != *name {
                        wrong.push(format!("{prompt:?} -> {} (want {name})", candidates[0].id));
                    }
                }
                other => wrong.push(format!("{prompt:?} -> {other:?} (want {name})")),
            }
        }
    }
    assert!(wrong.is_empty(), "misrouted:\n{}", wrong.join("\n"));
}

#[test]
fn explicit_choices_bypass_retrieval_and_the_cache_remembers() {
    let Some(dir) = embedder_dir() else { return };
    let s = setup(&dir);
    let before = s.calls.load(Ordering::SeqCst);
    let r = &s.router;
    assert_eq!(
        r.resolve(&Choice::Base, "write a poem").unwrap(),
        RoutePlan::Base
    );
    assert_eq!(
        r.resolve(&Choice::Named(id("sql")), "write a poem")
            .unwrap(),
        RoutePlan::Fixed {
            adapters: vec![(id("sql"), 1.0)]
        }
    );
    assert_eq!(
        r.resolve(
            &Choice::Weighted(vec![(id("sql"), 1.0), (id("python"), 3.0)]),
            "x"
        )
        .unwrap(),
        RoutePlan::Fixed {
            adapters: vec![(id("sql"), 0.25), (id("python"), 0.75)]
        }
    );
    assert!(matches!(
        r.resolve(&Choice::Named(id("nope")), "x"),
        Err(RouterError::UnknownAdapter { .. })
    ));
    assert!(matches!(
        r.resolve(
            &Choice::Weighted(vec![(id("sql"), 1.0), (id("nope"), 1.0)]),
            "x"
        ),
        Err(RouterError::UnknownAdapter { .. })
    ));
    assert!(matches!(
        r.resolve(&Choice::Weighted(vec![(id("sql"), -1.0)]), "x"),
        Err(RouterError::InvalidChoice { .. })
    ));
    assert_eq!(
        s.calls.load(Ordering::SeqCst),
        before,
        "explicit choices must not embed"
    );

    let prompt = "Write a haiku about a cat sleeping in the sun.";
    let first = r.route(prompt).unwrap();
    let second = r.route(prompt).unwrap();
    assert_eq!(first, second);
    assert_eq!(
        s.calls.load(Ordering::SeqCst),
        before + 1,
        "the repeated prompt must come from the cache"
    );

    // A registration changes the generation: the cached decision is not reused.
    {
        let mut reg = r.registry().write().unwrap();
        let src = s.sources.join("poetry");
        let req = NewAdapter {
            id: AdapterId::new("cats").unwrap(),
            source: src,
            description: "Everything about cats and their sleeping habits.".into(),
            examples: vec!["Why do cats sleep in the sun?".into()],
            tags: vec![],
            replace: false,
        };
        reg.register(req, &AcceptAll(summary())).unwrap();
    }
    let calls = s.calls.load(Ordering::SeqCst);
    r.route(prompt).unwrap();
    assert_eq!(s.calls.load(Ordering::SeqCst), calls + 1);
}

#[test]
fn unrelated_prompts_fall_back_to_the_base_model() {
    let Some(dir) = embedder_dir() else { return };
    let s = setup(&dir);
    let registry = s.router.registry().clone();
    let strict = Router::new(
        registry,
        RouterConfig {
            retrieval: RetrievalConfig {
                threshold: 0.95,
                ..Default::default()
            },
            cache_size: 0,
        },
    )
    .unwrap();
    assert_eq!(
        strict.route("How do I join two tables in SQL?").unwrap(),
        RoutePlan::Base
    );
    for unrelated in ["zxqv blorf 7781 quux", "What is the capital of Mongolia?"] {
        assert_eq!(
            s.router.route(unrelated).unwrap(),
            RoutePlan::Base,
            "{unrelated:?} should be under the default threshold"
        );
    }
}

fn smollm2_135m() -> ModelConfig {
    ModelConfig {
        hidden_size: 576,
        intermediate_size: 1536,
        num_layers: 30,
        num_heads: 9,
        num_kv_heads: 3,
        head_dim: 64,
        vocab_size: 49152,
        rope: loramux_runtime::config::RopeConfig::plain(100_000.0),
        rms_norm_eps: 1e-5,
        max_position: 8192,
        tie_word_embeddings: true,
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
        qk_norm: false,
    }
}

/// A bag-of-words embedder, so validation tests need no model files.
struct Words;

impl Embedder for Words {
    fn id(&self) -> &str {
        "words-16"
    }
    fn dim(&self) -> usize {
        16
    }
    fn embed(&self, texts: &[&str]) -> loramux_index::Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0.01f32; 16];
                for w in t.split_whitespace() {
                    v[w.len() % 16] += 1.0;
                }
                loramux_index::embed::l2_normalize(&mut v);
                v
            })
            .collect())
    }
}

#[test]
fn peft_validator_accepts_real_adapters_and_refuses_broken_ones() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/tests/fixtures/adapters");
    let tmp = tempfile::tempdir().unwrap();
    let config = RegistryConfig {
        allowed_roots: vec![fixtures.clone(), tmp.path().join("broken")],
        ..Default::default()
    };
    let mut reg = Registry::open(&tmp.path().join("registry"), config, Arc::new(Words)).unwrap();
    let validator = PeftValidator::new(smollm2_135m());
    let request = |name: &str, source: PathBuf| NewAdapter {
        id: AdapterId::new(name).unwrap(),
        source,
        description: format!("fixture {name}"),
        examples: vec![],
        tags: vec![],
        replace: false,
    };
    let rec = reg
        .register(request("r8-qv", fixtures.join("r8_qv")), &validator)
        .unwrap();
    assert_eq!(rec.config.rank, 8);
    assert_eq!(rec.config.target_modules, ["q_proj", "v_proj"]);
    assert_eq!(rec.config.layers, 30);
    let rec = reg
        .register(request("r2-all7", fixtures.join("r2_all7")), &validator)
        .unwrap();
    assert_eq!(rec.config.target_modules.len(), 7);
    reg.verify(&rec.id).unwrap();

    // A rank the serving bank cannot hold is refused with the limit named, not registered.
    let small_bank = PeftValidator::new(smollm2_135m()).with_max_rank(4);
    let err = reg
        .register(request("r8-big", fixtures.join("r8_qv")), &small_bank)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rank 8") && err.contains("--bank-rank"),
        "{err}"
    );
    assert!(reg.get(&AdapterId::new("r8-big").unwrap()).is_err());
    reg.register(request("r2-fits", fixtures.join("r2_all7")), &small_bank)
        .unwrap();

    // Truncated weights, and a config whose rank does not match the tensors.
    let broken = tmp.path().join("broken");
    let truncated = broken.join("truncated");
    std::fs::create_dir_all(&truncated).unwrap();
    std::fs::copy(
        fixtures.join("r8_qv/adapter_config.json"),
        truncated.join("adapter_config.json"),
    )
    .unwrap();
    let weights = std::fs::read(fixtures.join("r8_qv/adapter_model.safetensors")).unwrap();
    std::fs::write(
        truncated.join("adapter_model.safetensors"),
        &weights[..weights.len() / 2],
    )
    .unwrap();
    let wrong_rank = broken.join("wrong-rank");
    std::fs::create_dir_all(&wrong_rank).unwrap();
    let cfg = std::fs::read_to_string(fixtures.join("r8_qv/adapter_config.json")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    cfg["r"] = 4.into();
    std::fs::write(wrong_rank.join("adapter_config.json"), cfg.to_string()).unwrap();
    std::fs::write(wrong_rank.join("adapter_model.safetensors"), &weights).unwrap();
    let before = reg.list().unwrap();
    for (name, dir) in [("truncated", truncated), ("wrong-rank", wrong_rank)] {
        let err = reg.register(request(name, dir), &validator).unwrap_err();
        assert!(matches!(err, IndexError::Invalid { .. }), "{name}: {err}");
        eprintln!("{name}: {err}");
    }
    assert_eq!(reg.list().unwrap(), before);
    let folders = std::fs::read_dir(reg.adapters_dir()).unwrap().count();
    assert_eq!(folders, before.len(), "refused adapters left files behind");
}
