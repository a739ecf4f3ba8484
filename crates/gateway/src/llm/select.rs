//! Stage `select`: the order in which a route's backends are tried. Pure.

use rand::Rng;
use tollgate_config::snapshot::Route;

/// The order in which to try a route's backends: priority tiers lowest first;
/// within a tier a weighted random permutation, so load splits by weight and
/// a failed backend falls over to its tier-mates before the next tier.
/// Zero-weight backends are never drawn; the route's long-context models
/// come last, in the order listed (tried only for a request too long for
/// the others).
///
/// Least in flight (unless the route asks for `Weighted`): each tier's first
/// backend is the better of two weighted draws, by `in_flight` (this
/// replica's requests at that backend's provider) relative to weight, the
/// "power of two choices". A slow or stalling backend accumulates requests
/// and so draws fewer; idle, the split is exactly by weight (ties keep the
/// first draw). In-flight count rather than latency: an LLM answer's
/// latency follows its output length far more than the backend's health,
/// so a latency average mostly measures which prompts happened to land
/// where, while requests piling up is the direct sign of a slow backend.
pub fn attempt_order(
    route: &Route,
    in_flight: impl Fn(usize) -> u32,
    rng: &mut impl Rng,
) -> Vec<usize> {
    // The common case, one backend: no tiers to sort, nothing to draw.
    if let [only] = route.backends.as_slice() {
        return if only.weight > 0 { vec![0] } else { Vec::new() };
    }
    let mut order = Vec::with_capacity(route.backends.len());
    let mut tiers: Vec<u32> = route
        .backends
        .iter()
        .filter(|b| b.weight > 0)
        .map(|b| b.priority)
        .collect();
    tiers.sort_unstable();
    tiers.dedup();
    for tier in tiers {
        let mut pool: Vec<(usize, u32)> = route
            .backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.priority == tier && b.weight > 0)
            .map(|(i, b)| (i, b.weight))
            .collect();
        if pool.len() > 1 && !route.resilience.weighted_only {
            let first = draw(&pool, None, rng);
            let second = draw(&pool, Some(first), rng);
            let (a, b) = (pool[first], pool[second]);
            // b/w_b < a/w_a, compared without division.
            let better = if u64::from(in_flight(b.0)) * u64::from(a.1)
                < u64::from(in_flight(a.0)) * u64::from(b.1)
            {
                second
            } else {
                first
            };
            order.push(pool.swap_remove(better).0);
        }
        while pool.len() > 1 {
            let position = draw(&pool, None, rng);
            order.push(pool.swap_remove(position).0);
        }
        order.extend(pool.first().map(|(i, _)| *i));
    }
    if route.resilience.has_long_context {
        order.extend(
            route
                .backends
                .iter()
                .enumerate()
                .filter(|(_, b)| b.long_context)
                .map(|(i, _)| i),
        );
    }
    order
}

/// A position in `pool` drawn by weight (weights are non-zero), other than
/// `except`.
fn draw(pool: &[(usize, u32)], except: Option<usize>, rng: &mut impl Rng) -> usize {
    let candidates = || {
        pool.iter()
            .enumerate()
            .filter(move |(p, _)| Some(*p) != except)
    };
    let total: u32 = candidates().map(|(_, (_, w))| w).sum();
    let mut pick = rng.random_range(0..total);
    candidates()
        .find(|(_, (_, w))| {
            if pick < *w {
                true
            } else {
                pick -= w;
                false
            }
        })
        .map_or(0, |(p, _)| p)
}

/// Puts the backends of smart-routing tier `chosen` first, keeping the
/// priority and weight order within each tier; then the stronger tiers,
/// nearest first (a request the chosen tier fails is escalated), then the
/// cheaper ones, nearest first.
pub fn tier_first(order: &mut [usize], route: &Route, chosen: usize) {
    let rank = |tier: usize| {
        if tier >= chosen {
            tier - chosen
        } else {
            usize::MAX / 2 + (chosen - tier)
        }
    };
    // Long-context models stay last: they are not a tier.
    order.sort_by_key(|&index| {
        let backend = &route.backends[index];
        if backend.long_context {
            usize::MAX
        } else {
            rank(backend.tier)
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use tollgate_config::snapshot::Backend;

    fn route() -> Route {
        Route {
            name: "r".into(),
            aliases: vec!["m".into()],
            globs: vec![],
            headers: vec![],
            principals: Vec::new(),
            backends: vec![],
            request_timeout_ms: None,
            stream_idle_timeout_ms: None,
            endpoints: Default::default(),
            tiers: None,
            resilience: Default::default(),
            guard: None,
            prompts: None,
            allowed_regions: Vec::new(),
        }
    }

    fn weighted(backends: &[(u32, u32)]) -> Route {
        let mut r = route();
        r.backends = backends
            .iter()
            .map(|&(weight, priority)| Backend {
                provider: 0,
                model: "m".into(),
                pass_model: false,
                weight,
                priority,
                tier: 0,
                long_context: false,
            })
            .collect();
        r
    }

    fn idle(_: usize) -> u32 {
        0
    }

    #[test]
    fn the_backend_with_fewer_requests_in_flight_goes_first() {
        let r = weighted(&[(1, 0), (1, 0)]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        // Backend 0 has 8 in flight, backend 1 has 1: both are drawn every
        // time (two of two), so the less loaded one always goes first.
        let busy = |index: usize| if index == 0 { 8 } else { 1 };
        for _ in 0..100 {
            assert_eq!(attempt_order(&r, busy, &mut rng), [1, 0]);
        }
        // Relative to weight: 8 in flight at weight 9 beats 1 at weight 1.
        let r = weighted(&[(9, 0), (1, 0)]);
        for _ in 0..100 {
            assert_eq!(attempt_order(&r, busy, &mut rng)[0], 0);
        }
        // `Weighted` ignores the load.
        let mut r = weighted(&[(1, 0), (1, 0)]);
        r.resilience.weighted_only = true;
        let firsts = (0..2_000)
            .filter(|_| attempt_order(&r, busy, &mut rng)[0] == 0)
            .count();
        assert!((800..1_200).contains(&firsts), "{firsts}");
    }

    #[test]
    fn among_many_the_least_loaded_of_two_draws_wins() {
        let r = weighted(&[(1, 0), (1, 0), (1, 0), (1, 0)]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        // Backend 3 is stalled with many requests: it goes first only when
        // drawn twice, which two distinct draws never do.
        let load = |index: usize| if index == 3 { 50 } else { 2 };
        let stalled_first = (0..4_000)
            .filter(|_| attempt_order(&r, load, &mut rng)[0] == 3)
            .count();
        assert_eq!(stalled_first, 0);
    }

    #[test]
    fn long_context_models_come_last_whatever_the_tier() {
        let mut r = weighted(&[(1, 0), (1, 1)]);
        r.backends.push(Backend {
            weight: 0,
            long_context: true,
            ..r.backends[0].clone()
        });
        r.resilience.has_long_context = true;
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut order = attempt_order(&r, idle, &mut rng);
        assert_eq!(order, [0, 1, 2]);
        r.backends[0].tier = 1;
        tier_first(&mut order, &r, 1);
        assert_eq!(order, [0, 1, 2]);
    }

    #[test]
    fn tiers_are_tried_in_priority_order_and_zero_weight_never() {
        let r = weighted(&[(1, 1), (0, 0), (5, 0), (5, 2)]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..50 {
            assert_eq!(attempt_order(&r, idle, &mut rng), [2, 0, 3]);
        }
    }

    #[test]
    fn weights_split_traffic_within_a_tier() {
        let r = weighted(&[(80, 0), (20, 0)]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let firsts = (0..10_000)
            .filter(|_| attempt_order(&r, idle, &mut rng)[0] == 0)
            .count();
        assert!((7_600..8_400).contains(&firsts), "{firsts}");
        assert_eq!(
            attempt_order(&r, idle, &mut rng).len(),
            2,
            "the other is the in-tier fallback"
        );
    }

    #[test]
    fn the_chosen_tier_goes_first_then_stronger_then_cheaper() {
        // (weight, priority) per backend; tiers 0,1,2,1,0,2.
        let mut r = weighted(&[(1, 0), (1, 1), (1, 0), (1, 0), (1, 1), (1, 0)]);
        for (backend, tier) in r.backends.iter_mut().zip([0, 1, 2, 1, 0, 2]) {
            backend.tier = tier;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..20 {
            let base = attempt_order(&r, idle, &mut rng);
            let tiers = |order: &[usize]| -> Vec<usize> {
                order.iter().map(|&i| r.backends[i].tier).collect()
            };
            let mut order = base.clone();
            tier_first(&mut order, &r, 1);
            assert_eq!(tiers(&order), [1, 1, 2, 2, 0, 0]);
            // Within a tier, priority still decides: backend 3 (priority 0) before 1.
            assert_eq!(&order[..2], [3, 1]);
            let mut order = base.clone();
            tier_first(&mut order, &r, 2);
            assert_eq!(tiers(&order), [2, 2, 1, 1, 0, 0]);
            let mut order = base;
            tier_first(&mut order, &r, 0);
            assert_eq!(tiers(&order), [0, 0, 1, 1, 2, 2]);
            assert_eq!(&order[..2], [0, 4]);
        }
    }

    #[test]
    fn a_lone_backend_is_tried_unless_its_weight_is_zero() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        assert_eq!(attempt_order(&weighted(&[(1, 4)]), idle, &mut rng), [0]);
        assert!(attempt_order(&weighted(&[(0, 0)]), idle, &mut rng).is_empty());
        assert!(attempt_order(&route(), idle, &mut rng).is_empty());
    }
}
