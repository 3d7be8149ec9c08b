//! Facts about the machine that make the figures interpretable: the SIMD features the code
//! was compiled with (candle's quantized dot products exist only for features enabled at
//! compile time) and the load average around the run (other work steals cores).

use serde::Serialize;

/// Target features enabled at compile time (the x86-64-v3 baseline of `.cargo/config.toml`,
/// for this crate and candle alike); the faster tiers are picked at run time
/// ([`detected_features`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TargetFeatures {
    pub avx2: bool,
    pub fma: bool,
    pub f16c: bool,
    pub avx512f: bool,
    pub avx512vnni: bool,
}

impl TargetFeatures {
    pub fn compiled() -> Self {
        Self {
            avx2: cfg!(target_feature = "avx2"),
            fma: cfg!(target_feature = "fma"),
            f16c: cfg!(target_feature = "f16c"),
            avx512f: cfg!(target_feature = "avx512f"),
            avx512vnni: cfg!(target_feature = "avx512vnni"),
        }
    }

    /// `avx2 fma ... ` with `-` before the disabled ones.
    pub fn summary(&self) -> String {
        [
            ("avx2", self.avx2),
            ("fma", self.fma),
            ("f16c", self.f16c),
            ("avx512f", self.avx512f),
            ("avx512vnni", self.avx512vnni),
        ]
        .iter()
        .map(|&(name, on)| {
            if on {
                format!("+{name}")
            } else {
                format!("-{name}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
    }
}

/// The CPU's model name, as `/proc/cpuinfo` gives it.
pub fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, name)| name.trim().to_string())
}

/// The SIMD features this CPU has, as the kernels' run-time dispatch sees them.
pub fn detected_features() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let features = [
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("avxvnni", std::arch::is_x86_feature_detected!("avxvnni")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            ("avx512bw", std::arch::is_x86_feature_detected!("avx512bw")),
            (
                "avx512vnni",
                std::arch::is_x86_feature_detected!("avx512vnni"),
            ),
            (
                "avx512bf16",
                std::arch::is_x86_feature_detected!("avx512bf16"),
            ),
        ];
        features
            .iter()
            .map(|&(name, on)| format!("{}{name}", if on { '+' } else { '-' }))
            .collect::<Vec<_>>()
            .join(" ")
    }
    #[cfg(target_arch = "aarch64")]
    {
        format!(
            "{}dotprod",
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                '+'
            } else {
                '-'
            }
        )
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        String::new()
    }
}

/// 1, 5 and 15-minute load averages.
pub type LoadAverage = [f64; 3];

/// The load average now, where the system exposes `/proc/loadavg`.
pub fn load_average() -> Option<LoadAverage> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| parse_loadavg(&text))
}

/// Parses the first three fields of `/proc/loadavg` (`0.52 0.58 0.59 1/467 12345`).
pub fn parse_loadavg(text: &str) -> Option<LoadAverage> {
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    let mut out = [0.0; 3];
    for slot in &mut out {
        *slot = fields.next()?.ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_loadavg() {
        assert_eq!(
            parse_loadavg("1.55 2.41 2.88 3/412 30719\n"),
            Some([1.55, 2.41, 2.88])
        );
        assert_eq!(parse_loadavg("1.0 2.0"), None);
        assert_eq!(parse_loadavg("a b c"), None);
    }

    #[test]
    fn summary_marks_each_feature() {
        let f = TargetFeatures {
            avx2: true,
            fma: true,
            f16c: false,
            avx512f: false,
            avx512vnni: true,
        };
        assert_eq!(f.summary(), "+avx2 +fma -f16c -avx512f +avx512vnni");
    }
}
