//! The one table of the server's routes and their methods: the router's `Allow` answers (405,
//! `OPTIONS`, CORS) read it, and the tests hold both the router and `docs/openapi.json` to it.

/// Methods of a route that only reads.
const READ: &str = "GET, HEAD, OPTIONS";

/// Whether a route is part of the machine API (documented in `docs/openapi.json`) or a web UI
/// page for browsers, which the spec leaves out on purpose: its HTML is not an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Api,
    Page,
}

/// Routes at the root. `{…}` stands for one path segment.
const ROOT: &[(&str, &str, Kind)] = &[
    ("/ping", READ, Kind::Api),
    ("/metrics", READ, Kind::Api),
    ("/leader", READ, Kind::Api),
    ("/openapi.json", READ, Kind::Api),
];

/// Chronos' routes, served under both `/v1/scheduler` and the 2.x `/scheduler`. In match order:
/// the first template that fits a path names its route (`job/success/x` is not job `success`).
const SCHEDULER: &[(&str, &str)] = &[
    ("/iso8601", "POST, PUT, OPTIONS"),
    ("/dependency", "POST, PUT, OPTIONS"),
    ("/jobs", READ),
    ("/jobs/search", READ),
    ("/jobs/summary", READ),
    ("/graph/dot", READ),
    ("/graph/csv", READ),
    ("/graph/svg", READ),
    ("/workers", READ),
    ("/leader", READ),
    ("/tokens", "GET, HEAD, POST, OPTIONS"),
    ("/tokens/{name}", "DELETE, OPTIONS"),
    ("/audit", READ),
    ("/pause", "GET, HEAD, PUT, OPTIONS"),
    ("/resume", "PUT, OPTIONS"),
    ("/upcoming", READ),
    ("/job/success/{name}", "PUT, OPTIONS"),
    ("/job/stat/{name}", READ),
    ("/job/{name}/tasks", READ),
    ("/job/{name}/next", READ),
    ("/stats/{percentile}", READ),
    ("/job/{name}/task/{taskId}/progress", "POST, OPTIONS"),
    ("/job/{name}", "GET, HEAD, PUT, DELETE, OPTIONS"),
    ("/task/kill/{name}", "DELETE, OPTIONS"),
    ("/task/all", "DELETE, OPTIONS"),
    ("/task/{taskId}", "GET, HEAD, PUT, OPTIONS"),
    ("/task/{taskId}/output", READ),
];

/// The web UI's pages and its login form.
const PAGES: &[(&str, &str)] = &[
    ("/", "GET, OPTIONS"),
    ("/new", "GET, OPTIONS"),
    ("/jobs/{name}", "GET, OPTIONS"),
    ("/jobs/{name}/edit", "GET, OPTIONS"),
    ("/graph", "GET, OPTIONS"),
    ("/workers", "GET, OPTIONS"),
    ("/queue", "GET, OPTIONS"),
    ("/tasks/{taskId}", "GET, OPTIONS"),
    ("/audit", "GET, OPTIONS"),
    ("/login", "GET, POST, OPTIONS"),
    ("/logout", "POST, OPTIONS"),
];

/// One route: its path template, its methods as `Allow` lists them, and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub path: String,
    pub methods: &'static str,
    pub kind: Kind,
}

impl Route {
    /// Whether `path` (without its query) is one of this route's.
    pub fn matches(&self, path: &str) -> bool {
        let mut want = self.path.split('/');
        let mut have = path.split('/');
        loop {
            match (want.next(), have.next()) {
                (None, None) => return true,
                (Some(w), Some(h)) if w.starts_with('{') => {
                    if h.is_empty() {
                        return false;
                    }
                }
                (Some(w), Some(h)) if w == h => {}
                _ => return false,
            }
        }
    }
}

/// Every route, in match order.
pub fn routes() -> &'static [Route] {
    static ROUTES: std::sync::OnceLock<Vec<Route>> = std::sync::OnceLock::new();
    ROUTES.get_or_init(|| {
        let mut all: Vec<Route> = ROOT
            .iter()
            .map(|&(path, methods, kind)| Route {
                path: path.to_owned(),
                methods,
                kind,
            })
            .collect();
        for prefix in ["/v1/scheduler", "/scheduler"] {
            all.extend(SCHEDULER.iter().map(|&(path, methods)| Route {
                path: format!("{prefix}{path}"),
                methods,
                kind: Kind::Api,
            }));
        }
        all.extend(PAGES.iter().map(|&(path, methods)| Route {
            path: path.to_owned(),
            methods,
            kind: Kind::Page,
        }));
        all
    })
}

/// The route `path` belongs to, if any.
pub fn route_of(path: &str) -> Option<&'static Route> {
    routes().iter().find(|r| r.matches(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The router's own path patterns, read from its source: each `warp::path!(…)` (relative to
    /// `/v1/scheduler` for Chronos' routes) and `warp::path::end()` for `/`.
    fn router_patterns() -> Vec<Vec<String>> {
        let sources = [
            include_str!("mod.rs"),
            include_str!("tokens.rs"),
            include_str!("output.rs"),
            include_str!("ui/mod.rs"),
            include_str!("ui/session.rs"),
        ];
        let mut patterns = Vec::new();
        for source in sources {
            for (at, _) in source.match_indices("warp::path!(") {
                let rest = &source[at + "warp::path!(".len()..];
                let inner = &rest[..rest.find(')').expect("a closed path! macro")];
                patterns.push(
                    inner
                        .split('/')
                        .map(|s| {
                            let s = s.trim();
                            if s.starts_with('"') {
                                s.trim_matches('"').to_owned()
                            } else {
                                "{}".to_owned()
                            }
                        })
                        .collect(),
                );
            }
            if source.contains("warp::path::end()") {
                patterns.push(vec![String::new()]);
            }
        }
        patterns
    }

    fn segments(template: &str) -> Vec<String> {
        template
            .trim_start_matches('/')
            .split('/')
            .map(|s| {
                if s.starts_with('{') {
                    "{}".to_owned()
                } else {
                    s.to_owned()
                }
            })
            .collect()
    }

    /// A route added to the router without a line here would answer 404 to `OPTIONS` and no
    /// `Allow` with its 405s, and be missing from the spec's drift test: this catches it.
    #[test]
    fn every_router_pattern_is_in_the_table() {
        let patterns = router_patterns();
        assert!(
            patterns.len() > 30,
            "the source scan found too few routes: {patterns:?}"
        );
        let templates: Vec<Vec<String>> = routes().iter().map(|r| segments(&r.path)).collect();
        for pattern in patterns {
            assert!(
                templates.iter().any(|t| t.ends_with(&pattern)),
                "the router serves {pattern:?} but src/api/table.rs does not list it"
            );
        }
    }

    #[test]
    fn templates_match_paths() {
        let cases = [
            ("/v1/scheduler/job/success/a", "/v1/scheduler/job/success/{name}"),
            ("/scheduler/job/a/tasks", "/scheduler/job/{name}/tasks"),
            ("/v1/scheduler/task/all", "/v1/scheduler/task/all"),
            ("/", "/"),
            ("/jobs/x", "/jobs/{name}"),
        ];
        for (path, want) in cases {
            assert_eq!(route_of(path).map(|r| r.path.as_str()), Some(want), "{path}");
        }
        assert_eq!(route_of("/jobs/"), None);
        assert_eq!(route_of("/v1/scheduler/job"), None);
    }
}
