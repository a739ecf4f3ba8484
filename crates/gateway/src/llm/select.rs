//! Stage `select`: the order in which a route's backends are tried. Pure.

use rand::Rng;
use tollgate_config::snapshot::Route;

/// The order in which to try a route's backends: priority tiers lowest first;
/// within a tier a weighted random permutation, so load splits by weight and
/// a failed backend falls over to its tier-mates before the next tier.
/// Zero-weight backends are never tried.
pub fn attempt_order(route: &Route, rng: &mut impl Rng) -> Vec<usize> {
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
        while pool.len() > 1 {
            let total: u32 = pool.iter().map(|(_, w)| w).sum();
            let mut pick = rng.random_range(0..total);
            let position = pool
                .iter()
                .position(|(_, w)| {
                    if pick < *w {
                        true
                    } else {
                        pick -= w;
                        false
                    }
                })
                .unwrap_or(0);
            order.push(pool.swap_remove(position).0);
        }
        order.extend(pool.first().map(|(i, _)| *i));
    }
    order
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
    order.sort_by_key(|&index| rank(route.backends[index].tier));
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
            backends: vec![],
            request_timeout_ms: None,
            stream_idle_timeout_ms: None,
            endpoints: Default::default(),
            tiers: None,
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
            })
            .collect();
        r
    }

    #[test]
    fn tiers_are_tried_in_priority_order_and_zero_weight_never() {
        let r = weighted(&[(1, 1), (0, 0), (5, 0), (5, 2)]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..50 {
            assert_eq!(attempt_order(&r, &mut rng), [2, 0, 3]);
        }
    }

    #[test]
    fn weights_split_traffic_within_a_tier() {
        let r = weighted(&[(80, 0), (20, 0)]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let firsts = (0..10_000)
            .filter(|_| attempt_order(&r, &mut rng)[0] == 0)
            .count();
        assert!((7_600..8_400).contains(&firsts), "{firsts}");
        assert_eq!(
            attempt_order(&r, &mut rng).len(),
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
            let base = attempt_order(&r, &mut rng);
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
        assert_eq!(attempt_order(&weighted(&[(1, 4)]), &mut rng), [0]);
        assert!(attempt_order(&weighted(&[(0, 0)]), &mut rng).is_empty());
        assert!(attempt_order(&route(), &mut rng).is_empty());
    }
}
