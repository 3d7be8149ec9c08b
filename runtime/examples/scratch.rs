use loramux_runtime::*;
fn main() {
    let path = fetch::default_model_path().unwrap();
    let ids: Vec<u32> = vec![504, 3575, 282, 4649, 314];
    let mut src = weights::open(&path).unwrap();
    let model = LlamaModel::load(src.as_mut(), WeightDtype::Native).unwrap();
    let batches: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    for b in batches {
        let mut caches: Vec<KvCache> = (0..b).map(|_| KvCache::new(model.config())).collect();
        {
            let mut steps: Vec<SeqStep> = caches
                .iter_mut()
                .map(|c| SeqStep {
                    tokens: &ids,
                    cache: c,
                    candidates: &[],
                    logits: LogitRows::Last,
                })
                .collect();
            model.forward(&mut steps, &NoAdapters, &FixedGate).unwrap();
        }
        let n = 20;
        let t = std::time::Instant::now();
        let tok = [260u32];
        for _ in 0..n {
            let mut steps: Vec<SeqStep> = caches
                .iter_mut()
                .map(|c| SeqStep {
                    tokens: &tok,
                    cache: c,
                    candidates: &[],
                    logits: LogitRows::Last,
                })
                .collect();
            model.forward(&mut steps, &NoAdapters, &FixedGate).unwrap();
        }
        let dt = t.elapsed().as_secs_f64();
        println!(
            "batch {b}: {:.1} tok/s ({:.2} ms/step)",
            (b * n) as f64 / dt,
            dt * 1000.0 / n as f64
        );
    }
}
