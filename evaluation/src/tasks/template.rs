//! The machinery every task shares: a [`TaskSpec`] (templates + an instance generator), the
//! stable seeding of its random stream, and template rendering.
//!
//! A task is data: a name, its train and test instruction templates (disjoint sets) and a
//! plain function that draws one input and its answer. Templates hold `{key}` placeholders
//! filled from the instance's variables; everything else in them is copied verbatim.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Example, Split, Task};

/// One drawn input: the template variables and the exact answer.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Instance {
    pub vars: Vec<(&'static str, String)>,
    pub answer: String,
}

impl Instance {
    /// The common case: a single `{x}` placeholder.
    pub fn x(input: String, answer: String) -> Self {
        Self {
            vars: vec![("x", input)],
            answer,
        }
    }
}

/// A task defined by its templates and a generator of instances.
#[derive(Clone, Copy)]
pub(super) struct TaskSpec {
    pub name: &'static str,
    pub cluster: &'static str,
    pub description: &'static str,
    /// The in-domain task an out-of-domain one is related to; `None` for in-domain tasks.
    pub related: Option<&'static str>,
    pub train: &'static [&'static str],
    pub test: &'static [&'static str],
    pub make: fn(&mut StdRng) -> Instance,
}

impl Task for TaskSpec {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cluster(&self) -> &'static str {
        self.cluster
    }

    fn description(&self) -> &'static str {
        self.description
    }

    fn related(&self) -> Option<&'static str> {
        self.related
    }

    fn templates(&self, split: Split) -> &'static [&'static str] {
        match split {
            Split::Train => self.train,
            Split::Test => self.test,
        }
    }

    fn generate(&self, split: Split, seed: u64, n: usize) -> Vec<Example> {
        let templates = self.templates(split);
        if templates.is_empty() {
            return Vec::new();
        }
        let mut rng = task_rng(self.name, split, seed);
        (0..n)
            .map(|_| {
                let template = pick(&mut rng, templates);
                let instance = (self.make)(&mut rng);
                Example {
                    prompt: render(template, &instance.vars),
                    answer: instance.answer,
                }
            })
            .collect()
    }

    fn generate_covering(&self, split: Split, seed: u64, per_template: usize) -> Vec<Example> {
        let mut rng = task_rng(self.name, split, seed);
        let mut out = Vec::with_capacity(self.templates(split).len() * per_template);
        for template in self.templates(split) {
            for _ in 0..per_template {
                let instance = (self.make)(&mut rng);
                out.push(Example {
                    prompt: render(template, &instance.vars),
                    answer: instance.answer,
                });
            }
        }
        out
    }
}

/// FNV-1a, 64-bit: a fixed hash whose value never changes across Rust versions or runs
/// (std's `DefaultHasher` makes no such promise).
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The random stream of `(name, split, seed)`: tasks given the same seed still differ.
///
/// `StdRng` is only reproducible for one `rand` version; the lock file pins it.
pub(super) fn task_rng(name: &str, split: Split, seed: u64) -> StdRng {
    let tag: u8 = match split {
        Split::Train => 1,
        Split::Test => 2,
    };
    let mut bytes = Vec::with_capacity(name.len() + 10);
    bytes.extend_from_slice(name.as_bytes());
    bytes.push(0);
    bytes.push(tag);
    bytes.extend_from_slice(&seed.to_le_bytes());
    StdRng::seed_from_u64(fnv1a(&bytes))
}

/// Fills the `{key}` placeholders of `template` in one pass; a brace that opens no known key
/// is copied as is, so a filled value is never scanned again.
pub(super) fn render(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after.find('}').and_then(|close| {
            let key = &after[..close];
            vars.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (v, close))
        });
        match value {
            Some((v, close)) => {
                out.push_str(v);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One element of a non-empty slice, uniformly.
pub(super) fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// `k` distinct elements of `items` (k <= items.len()), in random order.
pub(super) fn pick_distinct<T: Copy + PartialEq>(
    rng: &mut StdRng,
    items: &[T],
    k: usize,
) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(k);
    while out.len() < k.min(items.len()) {
        let item = pick(rng, items);
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// `k` distinct integers in `lo..=hi`, in random order.
pub(super) fn distinct_ints(rng: &mut StdRng, k: usize, lo: u32, hi: u32) -> Vec<u32> {
    let span = (hi - lo + 1) as usize;
    let mut out: Vec<u32> = Vec::with_capacity(k);
    while out.len() < k.min(span) {
        let n = rng.random_range(lo..=hi);
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// Integers joined the way list answers are written: `"3, 14, 15"`.
pub(super) fn join_ints(ints: &[u32]) -> String {
    ints.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn task_rng_depends_on_name_split_and_seed() {
        let draw = |name, split, seed| task_rng(name, split, seed).random::<u64>();
        let base = draw("a", Split::Train, 1);
        assert_eq!(base, draw("a", Split::Train, 1));
        assert_ne!(base, draw("b", Split::Train, 1));
        assert_ne!(base, draw("a", Split::Test, 1));
        assert_ne!(base, draw("a", Split::Train, 2));
    }

    #[test]
    fn render_fills_known_keys_once_and_keeps_other_braces() {
        let vars = [("a", "{b}".to_string()), ("b", "2".to_string())];
        assert_eq!(render("x {a} y {b} {c}", &vars), "x {b} y 2 {c}");
        let json = [("obj", r#"{"age": 3}"#.to_string())];
        assert_eq!(render("In {obj}?", &json), r#"In {"age": 3}?"#);
        assert_eq!(render("no braces", &[]), "no braces");
        assert_eq!(render("open { only", &[]), "open { only");
    }

    #[test]
    fn distinct_helpers_never_repeat() {
        let mut rng = task_rng("t", Split::Train, 0);
        for _ in 0..200 {
            let v = distinct_ints(&mut rng, 5, 1, 6);
            let mut sorted = v.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), 5);
            assert!(v.iter().all(|n| (1..=6).contains(n)));
            let w = pick_distinct(&mut rng, &["a", "b", "c"], 3);
            assert!(w.contains(&"a") && w.contains(&"b") && w.contains(&"c"));
        }
        assert_eq!(join_ints(&[3, 14, 15]), "3, 14, 15");
        assert_eq!(join_ints(&[]), "");
    }
}
