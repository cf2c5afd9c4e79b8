//! Work spread over every core, in order: per-message signatures, where one P-384 operation
//! per message is most of the work and a single task would leave the other cores idle.

const MIN_SHARE: usize = 4;

/// Runs `f` over `items` on every core, keeping their order: the first share on this task, the
/// others on blocking threads. For per-message signatures, where one P-384 operation per
/// message is most of the work and a single task would leave the other cores idle.
pub(crate) async fn on_every_core<T, U>(
    mut items: Vec<T>,
    f: impl Fn(T) -> Result<U, String> + Clone + Send + 'static,
) -> Result<Vec<U>, String>
where
    T: Send + 'static,
    U: Send + 'static,
{
    // Asked once: each call reads cgroup files (it cost ~70 µs of latency per message).
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES
        .get_or_init(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
    // A share of a few items is not worth waking a thread for.
    let per = items.len().div_ceil(cores).max(MIN_SHARE);
    let mut others = Vec::new();
    while items.len() > per {
        let share = items.split_off(items.len() - per);
        let f = f.clone();
        others.push(tokio::task::spawn_blocking(move || {
            share
                .into_iter()
                .map(&f)
                .collect::<Result<Vec<U>, String>>()
        }));
    }
    let mut out = items
        .into_iter()
        .map(&f)
        .collect::<Result<Vec<U>, String>>()?;
    // Spawned from the end backwards: the last one holds what follows this task's share.
    for share in others.into_iter().rev() {
        out.extend(share.await.map_err(|e| e.to_string())??);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_every_core_keeps_the_order_and_reports_a_failure() {
        for n in [0usize, 1, 2, 3, 7, 100] {
            let out = on_every_core((0..n).collect(), |i| Ok(i * 2))
                .await
                .unwrap();
            assert_eq!(out, (0..n).map(|i| i * 2).collect::<Vec<_>>(), "{n} items");
        }
        let failed = on_every_core((0..100).collect(), |i: usize| {
            if i == 97 {
                Err(format!("item {i}"))
            } else {
                Ok(i)
            }
        })
        .await;
        assert_eq!(failed, Err("item 97".to_owned()));
    }
}
