//! When no adapter fits: the router `serve` builds for the committed zoo (its calibrated
//! `routing.json`) keeps everyday prompts on the base model and still routes the zoo's tasks.
//! Measured on the halves the calibration did not see.

use loramux_eval::harness::model::ZooRetriever;
use loramux_eval::route_calibration::{
    general_prompts, in_domain_prompts, zoo_router_config, Half, RoutingCalibration,
};
use loramux_eval::tasks::Suite;
use loramux_eval::zoo::default_zoo_dir;
use loramux_router::RoutePlan;
use loramux_runtime::fetch::{default_model_path, DEFAULT_EMBEDDER};

/// The share of general prompts `auto` must serve as the base model (the bar).
const MIN_GENERAL_TO_BASE: f64 = 0.95;
/// In-domain prompts routed to their own task's adapter, at least.
const MIN_IN_DOMAIN_TOP1: f64 = 0.90;

#[test]
fn auto_keeps_general_prompts_on_base_and_routes_the_zoo_tasks() {
    let zoo = default_zoo_dir();
    let calibration = RoutingCalibration::load(&zoo)
        .expect("routing.json parses")
        .expect("the zoo has a calibrated routing.json (loramux calibrate-route)");
    let config = zoo_router_config(&zoo).expect("router config");
    assert_eq!(config.retrieval.threshold, calibration.threshold);
    let model = loramux_runtime::weights::open(&default_model_path().expect("default model"))
        .expect("model opens");
    let scratch = tempfile::tempdir().unwrap();
    let retriever = ZooRetriever::load(
        &zoo,
        &DEFAULT_EMBEDDER.path().expect("embedder fetched"),
        scratch.path(),
        model.config(),
        config,
    )
    .expect("zoo registry");
    let router = retriever.router();

    let readme = "Give me three tips for learning a language.";
    assert_eq!(router.route(readme).unwrap(), RoutePlan::Base, "{readme}");
    assert_eq!(
        router.route("What is the capital of France?").unwrap(),
        RoutePlan::Base
    );

    let general = general_prompts(Half::Test).unwrap();
    let routed: Vec<(&str, RoutePlan)> = general
        .iter()
        .map(|p| (p.prompt.as_str(), router.route(&p.prompt).unwrap()))
        .filter(|(_, plan)| *plan != RoutePlan::Base)
        .collect();
    let to_base = 1.0 - routed.len() as f64 / general.len() as f64;
    eprintln!(
        "general test prompts served by base: {:.1}% of {}; routed: {:?}",
        to_base * 100.0,
        general.len(),
        routed.iter().map(|(p, _)| *p).collect::<Vec<_>>()
    );
    assert!(to_base >= MIN_GENERAL_TO_BASE, "{to_base}");

    let suite = Suite::default_suite();
    let in_domain = in_domain_prompts(&suite, 10, Half::Test);
    let right = in_domain
        .iter()
        .filter(|(task, prompt)| match router.route(prompt).unwrap() {
            RoutePlan::Auto { candidates, .. } => candidates[0].id.as_str() == task,
            _ => false,
        })
        .count();
    let top1 = right as f64 / in_domain.len() as f64;
    eprintln!(
        "in-domain test prompts routed to their adapter: {:.1}% of {}",
        top1 * 100.0,
        in_domain.len()
    );
    assert!(top1 >= MIN_IN_DOMAIN_TOP1, "{top1}");
}
