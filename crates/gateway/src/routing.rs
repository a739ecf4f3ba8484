//! Route matching and backend ordering. Pure: built once per snapshot, then
//! read by every request.

use std::collections::HashMap;

use http::HeaderMap;
use rand::Rng;
use tollgate_config::snapshot::{Route, glob_matches};

/// Index over a snapshot's routes.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Exact alias -> route indices, most specific (most header matches) first,
    /// then in snapshot precedence order.
    exact: HashMap<String, Vec<usize>>,
    /// (pattern, route index), longest literal text first, then most header
    /// matches, then precedence.
    globs: Vec<(String, usize)>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut globs = Vec::new();
        for (index, route) in routes.iter().enumerate() {
            for alias in &route.aliases {
                exact.entry(alias.clone()).or_default().push(index);
            }
            for glob in &route.globs {
                globs.push((glob.clone(), index));
            }
        }
        for candidates in exact.values_mut() {
            // Stable sort keeps precedence order among equals.
            candidates.sort_by_key(|&i| std::cmp::Reverse(routes[i].headers.len()));
        }
        globs.sort_by_key(|(pattern, i)| {
            (
                std::cmp::Reverse(pattern.len() - pattern.matches('*').count()),
                std::cmp::Reverse(routes[*i].headers.len()),
                *i,
            )
        });
        Self {
            routes,
            exact,
            globs,
        }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route for `model` given the request headers: exact aliases beat
    /// globs; within each, more header matches beat fewer.
    pub fn find(&self, model: &str, headers: &HeaderMap) -> Option<&Route> {
        if let Some(candidates) = self.exact.get(model)
            && let Some(&index) = candidates
                .iter()
                .find(|&&i| headers_match(&self.routes[i], headers))
        {
            return Some(&self.routes[index]);
        }
        self.globs
            .iter()
            .find(|(pattern, i)| {
                glob_matches(pattern, model) && headers_match(&self.routes[*i], headers)
            })
            .map(|(_, i)| &self.routes[*i])
    }

    /// Exact aliases a caller with these headers can use, sorted.
    pub fn visible_aliases(&self, headers: &HeaderMap) -> Vec<&str> {
        let mut aliases: Vec<&str> = self
            .exact
            .iter()
            .filter(|(_, candidates)| {
                candidates
                    .iter()
                    .any(|&i| headers_match(&self.routes[i], headers))
            })
            .map(|(alias, _)| alias.as_str())
            .collect();
        aliases.sort_unstable();
        aliases
    }
}

fn headers_match(route: &Route, headers: &HeaderMap) -> bool {
    route.headers.iter().all(|(name, value)| {
        headers
            .get_all(name.as_str())
            .iter()
            .any(|v| v.as_bytes() == value.as_bytes())
    })
}

/// The order in which to try a route's backends: priority tiers lowest first;
/// within a tier a weighted random permutation, so load splits by weight and
/// a failed backend falls over to its tier-mates before the next tier.
/// Zero-weight backends are never tried.
pub fn attempt_order(route: &Route, rng: &mut impl Rng) -> Vec<usize> {
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
        while !pool.is_empty() {
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
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use tollgate_config::snapshot::Backend;

    fn route(name: &str, aliases: &[&str], globs: &[&str], headers: &[(&str, &str)]) -> Route {
        Route {
            name: name.into(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            globs: globs.iter().map(|s| s.to_string()).collect(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            backends: vec![],
            request_timeout_ms: None,
            stream_idle_timeout_ms: None,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            map.insert(*n, v.parse().unwrap());
        }
        map
    }

    fn table() -> RouteTable {
        RouteTable::new(vec![
            route("plain", &["chat"], &[], &[]),
            route("canary", &["chat"], &[], &[("x-canary", "yes")]),
            route("wide", &[], &["gpt-*"], &[]),
            route("narrow", &[], &["gpt-4o*"], &[]),
        ])
    }

    #[test]
    fn exact_beats_glob_and_headers_beat_none() {
        let t = table();
        assert_eq!(t.find("chat", &headers(&[])).unwrap().name, "plain");
        assert_eq!(
            t.find("chat", &headers(&[("x-canary", "yes")]))
                .unwrap()
                .name,
            "canary"
        );
        assert_eq!(
            t.find("chat", &headers(&[("x-canary", "no")]))
                .unwrap()
                .name,
            "plain"
        );
        assert_eq!(t.find("gpt-4o-mini", &headers(&[])).unwrap().name, "narrow");
        assert_eq!(t.find("gpt-3.5", &headers(&[])).unwrap().name, "wide");
        assert!(t.find("claude", &headers(&[])).is_none());
    }

    #[test]
    fn header_only_alias_is_hidden_without_the_header() {
        let t = RouteTable::new(vec![
            route("a", &["open"], &[], &[]),
            route("b", &["secret"], &[], &[("x-team", "r")]),
        ]);
        assert_eq!(t.visible_aliases(&headers(&[])), ["open"]);
        assert_eq!(
            t.visible_aliases(&headers(&[("x-team", "r")])),
            ["open", "secret"]
        );
        assert!(t.find("secret", &headers(&[])).is_none());
    }

    fn weighted(backends: &[(u32, u32)]) -> Route {
        let mut r = route("r", &["m"], &[], &[]);
        r.backends = backends
            .iter()
            .map(|&(weight, priority)| Backend {
                provider: 0,
                model: "m".into(),
                pass_model: false,
                weight,
                priority,
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
}
