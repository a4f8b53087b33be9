//! Tests for placement: Chronos' constraint vectors and placement cases as tables, and proptest properties for
//! capacity, constraint safety, completeness and spreading.

use super::{
    Constraint, Error, Needs, Offer, Operator, Resources, Runs, Unplaceable, attributes_with_hostname, place,
};
use proptest::prelude::*;

fn attrs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn res(cpus: f64, mem: f64, disk: f64) -> Resources {
    Resources { cpus, mem, disk }
}

fn compile(attribute: &str, operator: &str, value: &str) -> Constraint {
    Constraint::compile(attribute, operator, value)
        .unwrap_or_else(|e| panic!("compiling [{attribute}, {operator}, {value}]: {e}"))
}

fn offer(worker: &str, total: Resources, used: Resources) -> Offer {
    Offer {
        worker: worker.to_owned(),
        hostname: format!("{worker}.example.com"),
        attributes: Vec::new(),
        total,
        used,
        runs: Runs::EVERYTHING,
    }
}

fn offer_with(worker: &str, pairs: &[(&str, &str)], total: Resources, used: Resources) -> Offer {
    Offer {
        attributes: attrs(pairs),
        ..offer(worker, total, used)
    }
}

/// What the row checks, the worker's hostname and attributes, `[attribute, operator, value]`, and whether it matches.
type VectorCase<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], [&'a str; 3], bool);

#[test]
fn chronos_constraint_vectors() {
    let rack1 = [("dc", "north"), ("rack", "rack-1")];
    let cases: &[VectorCase] = &[
        ("equals hit", "h", &rack1, ["rack", "EQUALS", "rack-1"], true),
        ("equals miss", "h", &rack1, ["rack", "EQUALS", "rack-2"], false),
        ("like hit", "h", &rack1, ["rack", "LIKE", "rack-[1-3]"], true),
        ("like miss", "h", &rack1, ["rack", "LIKE", "rack-[2-3]"], false),
        (
            "like alternation",
            "h",
            &[("dc", "north")],
            ["dc", "LIKE", "north|south"],
            true,
        ),
        (
            "unlike hit",
            "h",
            &[("rack", "rack-4")],
            ["rack", "UNLIKE", "rack-[1-3]"],
            true,
        ),
        (
            "unlike miss",
            "h",
            &[("dc", "north")],
            ["dc", "UNLIKE", "north|south"],
            false,
        ),
        (
            "equals missing attribute",
            "h",
            &rack1,
            ["zone", "EQUALS", "a"],
            false,
        ),
        (
            "like missing attribute",
            "h",
            &rack1,
            ["zone", "LIKE", ".*"],
            false,
        ),
        (
            "unlike missing attribute",
            "h",
            &rack1,
            ["zone", "UNLIKE", "a"],
            false,
        ),
        (
            "automatic hostname hit",
            "slave.one.com",
            &[("rack", "rack-1")],
            ["hostname", "EQUALS", "slave.one.com"],
            true,
        ),
        (
            "automatic hostname miss",
            "slave.one.com",
            &[("rack", "rack-1")],
            ["hostname", "EQUALS", "slave.two.com"],
            false,
        ),
        (
            "explicit hostname hides the real one",
            "slave.one.com",
            &[("hostname", "slave.explicit.com")],
            ["hostname", "EQUALS", "slave.one.com"],
            false,
        ),
        (
            "explicit hostname wins",
            "slave.one.com",
            &[("hostname", "slave.explicit.com")],
            ["hostname", "EQUALS", "slave.explicit.com"],
            true,
        ),
        (
            "like is a whole-value match",
            "h",
            &rack1,
            ["rack", "LIKE", "rack"],
            false,
        ),
        (
            "alternation is anchored as a whole",
            "h",
            &rack1,
            ["rack", "LIKE", "rack|x"],
            false,
        ),
        (
            "alternation can match",
            "h",
            &rack1,
            ["rack", "LIKE", "x|rack-1"],
            true,
        ),
        (
            "unlike is a whole-value match",
            "h",
            &rack1,
            ["rack", "UNLIKE", "rack"],
            true,
        ),
        (
            "equals is case-sensitive",
            "h",
            &rack1,
            ["rack", "EQUALS", "RACK-1"],
            false,
        ),
        (
            "equals sees every value",
            "h",
            &[("rack", "rack-1"), ("rack", "rack-2")],
            ["rack", "EQUALS", "rack-2"],
            true,
        ),
        (
            "like sees the first value only",
            "h",
            &[("rack", "rack-1"), ("rack", "rack-2")],
            ["rack", "LIKE", "rack-2"],
            false,
        ),
        (
            "unlike sees the first value only",
            "h",
            &[("rack", "rack-1"), ("rack", "rack-2")],
            ["rack", "UNLIKE", "rack-2"],
            true,
        ),
        (
            "like on the automatic hostname",
            "slave.one.com",
            &[],
            ["hostname", "LIKE", r"slave\.(one|two)\.com"],
            true,
        ),
    ];
    for (what, hostname, pairs, [attribute, operator, value], expected) in cases {
        let constraint = compile(attribute, operator, value);
        let attributes = attributes_with_hostname(hostname, &attrs(pairs));
        assert_eq!(constraint.matches(&attributes), *expected, "{what}");

        // Placement sees the worker the same way, without copying its attributes.
        let worker = Offer {
            hostname: (*hostname).to_owned(),
            ..offer_with("w", pairs, res(1.0, 1.0, 1.0), Resources::default())
        };
        let placed = place(&Resources::default(), Needs::default(), &[constraint], &[worker]);
        assert_eq!(placed.is_ok(), *expected, "{what}: place gave {placed:?}");
    }
}

#[test]
fn compile_errors() {
    // (attribute, operator, value, the whole message or, with a trailing '…', its start)
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "rack",
            "LIKE",
            "[[[",
            r#"constraint ["rack", "LIKE", "[[["]: invalid regular expression: unclosed character class"#,
        ),
        (
            "rack",
            "UNLIKE",
            "a)|(b",
            r#"constraint ["rack", "UNLIKE", "a)|(b"]: invalid regular expression: unopened group"#,
        ),
        (
            "rack",
            "NEAR",
            "x",
            r#"constraint ["rack", "NEAR", "x"]: unknown operator "NEAR"; use EQUALS, LIKE or UNLIKE"#,
        ),
        (
            "rack",
            "equals",
            "x",
            r#"constraint ["rack", "equals", "x"]: unknown operator "equals"; use EQUALS, LIKE or UNLIKE"#,
        ),
        (
            "rack",
            "LIKE",
            r"(\d",
            r#"constraint ["rack", "LIKE", "(\\d"]: invalid regular expression: unclosed group"#,
        ),
    ];
    for (attribute, operator, value, expected) in cases {
        let err = Constraint::compile(attribute, operator, value)
            .expect_err(&format!("[{attribute}, {operator}, {value}] should not compile"));
        assert_eq!(err.to_string(), *expected);
        assert!(!err.to_string().contains('\n'), "one line: {err}");
    }

    let err = Constraint::compile("rack", "NEAR", "x").unwrap_err();
    assert_eq!(
        err,
        Error::UnknownOperator {
            attribute: "rack".into(),
            operator: "NEAR".into(),
            value: "x".into(),
        }
    );
    assert!(matches!(
        Constraint::compile("rack", "LIKE", "[[[").unwrap_err(),
        Error::InvalidRegex { .. }
    ));
    // EQUALS takes its value literally, so regex syntax in it is fine.
    assert!(Constraint::compile("rack", "EQUALS", "[[[").is_ok());
}

#[test]
fn accessors_and_display() {
    let c = compile("rack", "UNLIKE", r"rack-\d");
    assert_eq!(c.attribute(), "rack");
    assert_eq!(c.operator(), Operator::Unlike);
    assert_eq!(c.value(), r"rack-\d");
    assert_eq!(c.to_string(), r#"["rack", "UNLIKE", "rack-\\d"]"#);
    assert_eq!(compile("a", "EQUALS", "b").operator(), Operator::Equals);
    assert_eq!(compile("a", "LIKE", "b").operator(), Operator::Like);
    assert_eq!(c, compile("rack", "UNLIKE", r"rack-\d"));
    assert_ne!(c, compile("rack", "LIKE", r"rack-\d"));
}

#[test]
fn automatic_hostname_attribute() {
    assert_eq!(
        attributes_with_hostname("h1", &attrs(&[("rack", "r")])),
        attrs(&[("rack", "r"), ("hostname", "h1")])
    );
    assert_eq!(
        attributes_with_hostname("h1", &attrs(&[("hostname", "x"), ("rack", "r")])),
        attrs(&[("hostname", "x"), ("rack", "r")])
    );
    assert_eq!(attributes_with_hostname("h1", &[]), attrs(&[("hostname", "h1")]));
}

#[test]
fn resource_arithmetic() {
    // Fractional cpus add up exactly (in thousandths), so an exact fit is a fit and sums read
    // as people wrote them: twenty tasks of 0.1 cpu use 2 cpus, not 2.0000000000000004.
    let used = res(0.1, 0.0, 0.0).plus(&res(0.2, 0.0, 0.0));
    assert!(used.fits_in(&res(0.3, 0.0, 0.0)));
    assert_eq!(used, res(0.3, 0.0, 0.0));
    let twenty = (0..20).fold(Resources::default(), |sum, _| sum.plus(&res(0.1, 0.1, 0.1)));
    assert_eq!(twenty, res(2.0, 2.0, 2.0));
    assert_eq!(twenty.cpus.to_string(), "2");
    let back = (0..20).fold(twenty, |left, _| left.minus(&res(0.1, 0.1, 0.1)));
    assert_eq!(back, Resources::default());
    assert!(!res(0.31, 0.0, 0.0).fits_in(&res(0.3, 0.0, 0.0)));
    assert!(res(1.0, 2.0, 3.0).fits_in(&res(1.0, 2.0, 3.0)));
    assert!(!res(1.0, 2.0, 3.5).fits_in(&res(1.0, 2.0, 3.0)));
    assert!(!res(1.0, 2.5, 3.0).fits_in(&res(1.0, 2.0, 3.0)));
    assert!(!res(1.5, 2.0, 3.0).fits_in(&res(1.0, 2.0, 3.0)));
    assert_eq!(res(1.0, 2.0, 3.0).plus(&res(0.5, 1.0, 1.5)), res(1.5, 3.0, 4.5));
    assert_eq!(res(1.0, 2.0, 3.0).minus(&res(0.5, 4.0, 3.0)), res(0.5, 0.0, 0.0));
    let o = offer("w", res(4.0, 1024.0, 2048.0), res(5.0, 24.0, 48.0));
    assert_eq!(o.free(), res(0.0, 1000.0, 2000.0));
}

#[test]
fn resource_display() {
    let cases = [
        (res(2.0, 128.0, 256.0), "2 cpus, 128 MB mem, 256 MB disk"),
        (res(1.0, 0.0, 0.0), "1 cpu, 0 MB mem, 0 MB disk"),
        (res(0.5, 900.0, 10000.0), "0.5 cpus, 900 MB mem, 10000 MB disk"),
        (
            res(0.1 + 0.2, 1.0 / 3.0, -0.0),
            "0.3 cpus, 0.333 MB mem, 0 MB disk",
        ),
        (res(0.25, 1.5, 2.125), "0.25 cpus, 1.5 MB mem, 2.125 MB disk"),
    ];
    for (resources, expected) in cases {
        assert_eq!(resources.to_string(), expected);
    }
}

#[test]
fn unplaceable_display() {
    let cases = [
        (
            Unplaceable::NoWorkers,
            "waiting for a worker: none is connected and taking new tasks",
        ),
        (
            Unplaceable::NoMatchingWorker {
                constraint: r#"["rack", "EQUALS", "rack-9"]"#.into(),
            },
            r#"waiting for a matching worker: no worker satisfies constraint ["rack", "EQUALS", "rack-9"]"#,
        ),
        (
            Unplaceable::NoCapacity {
                need: res(2.0, 128.0, 256.0),
                largest_free: res(0.5, 900.0, 10000.0),
            },
            "waiting for resources: needs 2 cpus, 128 MB mem, 256 MB disk; \
             the most free on a matching worker is 0.5 cpus, 900 MB mem, 10000 MB disk",
        ),
        (
            Unplaceable::TooLarge {
                need: res(8.0, 128.0, 256.0),
                largest_total: res(4.0, 4096.0, 10000.0),
            },
            "waiting for a larger worker: needs 8 cpus, 128 MB mem, 256 MB disk; \
             the largest matching worker has 4 cpus, 4096 MB mem, 10000 MB disk in total",
        ),
    ];
    for (why, expected) in cases {
        assert_eq!(why.to_string(), expected);
    }
}

/// What the row checks, the task's need and constraints, the workers, and the expected answer.
type PlacementCase = (
    &'static str,
    Resources,
    Vec<Constraint>,
    Vec<Offer>,
    Result<usize, Unplaceable>,
);

#[test]
fn placement_table() {
    let big = res(4.0, 4096.0, 10000.0);
    let none = Resources::default();
    let task = res(1.0, 128.0, 256.0);
    let rack1 = [("rack", "rack-1")];
    let rack2 = [("rack", "rack-2")];
    let on_rack1 = [compile("rack", "EQUALS", "rack-1")];

    let cases: Vec<PlacementCase> = vec![
        ("no workers", task, vec![], vec![], Err(Unplaceable::NoWorkers)),
        (
            "no workers, even with constraints",
            task,
            on_rack1.to_vec(),
            vec![],
            Err(Unplaceable::NoWorkers),
        ),
        (
            "one empty worker",
            task,
            vec![],
            vec![offer("a", big, none)],
            Ok(0),
        ),
        (
            "constraints unmet",
            task,
            on_rack1.to_vec(),
            vec![offer_with("a", &rack2, big, none)],
            Err(Unplaceable::NoMatchingWorker {
                constraint: r#"["rack", "EQUALS", "rack-1"]"#.into(),
            }),
        ),
        (
            "the constraint no worker satisfies is named, not the first one",
            task,
            vec![
                compile("rack", "LIKE", "rack-.*"),
                compile("dc", "EQUALS", "mars"),
            ],
            vec![offer_with("a", &rack2, big, none)],
            Err(Unplaceable::NoMatchingWorker {
                constraint: r#"["dc", "EQUALS", "mars"]"#.into(),
            }),
        ),
        (
            "constraints each met somewhere but never together",
            task,
            vec![
                compile("rack", "EQUALS", "rack-1"),
                compile("dc", "EQUALS", "north"),
            ],
            vec![
                offer_with("a", &[("rack", "rack-1"), ("dc", "south")], big, none),
                offer_with("b", &[("rack", "rack-2"), ("dc", "north")], big, none),
            ],
            Err(Unplaceable::NoMatchingWorker {
                constraint: r#"["dc", "EQUALS", "north"] together with the constraints before it"#.into(),
            }),
        ),
        (
            "the matching worker is chosen even when busier",
            task,
            on_rack1.to_vec(),
            vec![
                offer_with("a", &rack2, big, none),
                offer_with("b", &rack1, big, res(2.0, 0.0, 0.0)),
            ],
            Ok(1),
        ),
        (
            "busy",
            res(2.0, 128.0, 256.0),
            vec![],
            vec![
                offer("a", big, res(3.5, 3196.0, 0.0)),
                offer("b", big, res(4.0, 0.0, 0.0)),
            ],
            Err(Unplaceable::NoCapacity {
                need: res(2.0, 128.0, 256.0),
                largest_free: res(0.5, 900.0, 10000.0),
            }),
        ),
        (
            "busy counts only matching workers",
            task,
            on_rack1.to_vec(),
            vec![
                offer_with("a", &rack1, big, res(4.0, 0.0, 0.0)),
                offer_with("b", &rack2, big, none),
            ],
            Err(Unplaceable::NoCapacity {
                need: task,
                largest_free: res(0.0, 4096.0, 10000.0),
            }),
        ),
        (
            "too large",
            res(8.0, 128.0, 256.0),
            vec![],
            vec![offer("a", big, none), offer("b", res(2.0, 8192.0, 10000.0), none)],
            Err(Unplaceable::TooLarge {
                need: res(8.0, 128.0, 256.0),
                largest_total: big,
            }),
        ),
        (
            "too large for every worker, though each resource exists somewhere",
            res(4.0, 8192.0, 0.0),
            vec![],
            vec![
                offer("a", res(4.0, 1024.0, 0.0), none),
                offer("b", res(1.0, 8192.0, 0.0), none),
            ],
            Err(Unplaceable::TooLarge {
                need: res(4.0, 8192.0, 0.0),
                largest_total: res(1.0, 8192.0, 0.0),
            }),
        ),
        (
            "too large wins over busy",
            res(8.0, 128.0, 256.0),
            vec![],
            vec![offer("a", big, big)],
            Err(Unplaceable::TooLarge {
                need: res(8.0, 128.0, 256.0),
                largest_total: big,
            }),
        ),
        (
            "the emptier of two equal workers wins",
            task,
            vec![],
            vec![
                offer("a", big, res(2.0, 0.0, 0.0)),
                offer("b", big, res(1.0, 0.0, 0.0)),
            ],
            Ok(1),
        ),
        (
            "load is the fullest resource, not the sum",
            task,
            vec![],
            vec![
                offer("a", big, res(1.0, 1024.0, 2500.0)),
                offer("b", big, res(0.0, 2048.0, 0.0)),
            ],
            Ok(0),
        ),
        (
            "load is relative to the worker's size",
            task,
            vec![],
            vec![
                offer("a", big, res(1.0, 0.0, 0.0)),
                offer("b", res(16.0, 16384.0, 40000.0), res(3.0, 0.0, 0.0)),
            ],
            Ok(1),
        ),
        (
            "ties go to the name that sorts first",
            task,
            vec![],
            vec![
                offer("b", big, none),
                offer("a", big, none),
                offer("c", big, none),
            ],
            Ok(1),
        ),
        (
            "fits on cpus but not on mem is skipped",
            task,
            vec![],
            vec![
                offer("a", big, res(0.0, 4000.0, 0.0)),
                offer("b", big, res(3.0, 0.0, 0.0)),
            ],
            Ok(1),
        ),
        (
            "fits on cpus and mem but not on disk is skipped",
            task,
            vec![],
            vec![
                offer("a", big, res(0.0, 0.0, 9800.0)),
                offer("b", big, res(3.0, 0.0, 0.0)),
            ],
            Ok(1),
        ),
        (
            "an exact fit fits",
            task,
            vec![],
            vec![offer("a", big, big.minus(&task))],
            Ok(0),
        ),
        (
            "a worker without disk takes tasks that need none",
            res(1.0, 128.0, 0.0),
            vec![],
            vec![offer("a", res(4.0, 4096.0, 0.0), none)],
            Ok(0),
        ),
        (
            "constraint on the automatic hostname",
            task,
            vec![compile("hostname", "EQUALS", "b.example.com")],
            vec![offer("a", big, none), offer("b", big, big.minus(&task))],
            Ok(1),
        ),
    ];
    for (what, need, constraints, offers, expected) in cases {
        assert_eq!(
            place(&need, Needs::default(), &constraints, &offers),
            expected,
            "{what}"
        );
    }
}

/// What the row checks, what the task needs, its constraints, the workers and the answer.
type KindCase<'a> = (
    &'a str,
    Needs,
    Vec<Constraint>,
    Vec<Offer>,
    Result<usize, Unplaceable>,
);

#[test]
fn only_workers_that_do_the_kind_of_work_count() {
    let (big, none) = (res(4.0, 4096.0, 4096.0), Resources::default());
    let containers = |name: &str, used: Resources| Offer {
        runs: Runs::CONTAINERS,
        ..offer(name, big, used)
    };
    let command = Needs {
        process: true,
        fetch: false,
    };
    let fetch = Needs {
        process: false,
        fetch: true,
    };
    let task = res(1.0, 128.0, 0.0);
    let on_rack = |rack: &str, o: Offer| Offer {
        attributes: attrs(&[("rack", rack)]),
        ..o
    };
    let cases: Vec<KindCase> = vec![
        (
            "a container goes anywhere",
            Needs::default(),
            vec![],
            vec![containers("a", none)],
            Ok(0),
        ),
        (
            "a command needs a worker that runs processes",
            command,
            vec![],
            vec![containers("a", none)],
            Err(Unplaceable::Unsupported { needs: command }),
        ),
        (
            "fetch needs a worker with a sandbox",
            fetch,
            vec![],
            vec![containers("a", none)],
            Err(Unplaceable::Unsupported { needs: fetch }),
        ),
        (
            "a command goes to the busier worker that can run it",
            command,
            vec![],
            vec![containers("a", none), offer("b", big, res(3.0, 0.0, 0.0))],
            Ok(1),
        ),
        (
            "constraints are judged among the capable workers only",
            command,
            vec![compile("rack", "EQUALS", "r1")],
            vec![
                on_rack("r1", containers("a", none)),
                on_rack("r2", offer("b", big, none)),
            ],
            Err(Unplaceable::NoMatchingWorker {
                constraint: r#"["rack", "EQUALS", "r1"]"#.to_owned(),
            }),
        ),
        (
            "no workers at all",
            command,
            vec![],
            vec![],
            Err(Unplaceable::NoWorkers),
        ),
    ];
    for (what, needs, constraints, offers, expected) in cases {
        assert_eq!(place(&task, needs, &constraints, &offers), expected, "{what}");
    }
}

// --- properties ---------------------------------------------------------------------------------------------------

const KEYS: &[&str] = &["rack", "dc", "hostname"];
const VALUES: &[&str] = &["rack-1", "rack-2", "north", "south", "a.com"];
const PATTERNS: &[&str] = &["rack-[1-2]", "north|south", ".*", r"[a-z]\.com", "rack-1"];
const HOSTS: &[&str] = &["a.com", "b.com"];

/// Resources on a grid of eighths, so sums are exact and "fits" has no float doubt in it.
fn grid_resources(max_eighths: u32) -> impl Strategy<Value = Resources> {
    (0..=max_eighths, 0..=max_eighths, 0..=max_eighths).prop_map(|(c, m, d)| Resources {
        cpus: f64::from(c) / 8.0,
        mem: f64::from(m) * 16.0,
        disk: f64::from(d) * 32.0,
    })
}

fn constraint_strategy() -> impl Strategy<Value = Constraint> {
    (
        proptest::sample::select(KEYS),
        0..3usize,
        proptest::sample::select(VALUES),
        proptest::sample::select(PATTERNS),
    )
        .prop_map(|(key, op, value, pattern)| match op {
            0 => compile(key, "EQUALS", value),
            1 => compile(key, "LIKE", pattern),
            _ => compile(key, "UNLIKE", pattern),
        })
}

fn offer_strategy() -> impl Strategy<Value = Offer> {
    (
        0..4u8,
        proptest::sample::select(HOSTS),
        proptest::collection::vec(
            (proptest::sample::select(KEYS), proptest::sample::select(VALUES)),
            0..4,
        ),
        grid_resources(32),
        (0..=8u32, 0..=8u32, 0..=8u32),
    )
        .prop_map(|(name, host, pairs, total, (fc, fm, fd))| {
            // Used is a share of total in eighths, so it starts within capacity.
            let used = Resources {
                cpus: total.cpus * f64::from(fc) / 8.0,
                mem: total.mem * f64::from(fm) / 8.0,
                disk: total.disk * f64::from(fd) / 8.0,
            };
            Offer {
                worker: format!("w{name}"),
                hostname: host.to_owned(),
                attributes: pairs
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                total,
                used,
                runs: Runs::EVERYTHING,
            }
        })
}

fn satisfies(offer: &Offer, constraints: &[Constraint]) -> bool {
    let attributes = attributes_with_hostname(&offer.hostname, &offer.attributes);
    constraints.iter().all(|c| c.matches(&attributes))
}

fn within(used: &Resources, total: &Resources) -> bool {
    used.cpus <= total.cpus && used.mem <= total.mem && used.disk <= total.disk
}

proptest! {
    // Failures are not persisted: the regression files would land beside the crate, which is shared with other work.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn placing_tasks_one_by_one_never_overcommits(
        mut offers in proptest::collection::vec(offer_strategy(), 0..6),
        tasks in proptest::collection::vec(
            (grid_resources(12), proptest::collection::vec(constraint_strategy(), 0..2)),
            0..40,
        ),
    ) {
        for (need, constraints) in &tasks {
            if let Ok(i) = place(need, Needs::default(), constraints, &offers) {
                offers[i].used = offers[i].used.plus(need);
            }
            for o in &offers {
                prop_assert!(within(&o.used, &o.total), "{} used {:?} of {:?}", o.worker, o.used, o.total);
            }
        }
    }

    #[test]
    fn place_succeeds_whenever_a_matching_worker_has_room(
        need in grid_resources(16),
        constraints in proptest::collection::vec(constraint_strategy(), 0..3),
        offers in proptest::collection::vec(offer_strategy(), 0..6),
    ) {
        let matching: Vec<&Offer> = offers.iter().filter(|o| satisfies(o, &constraints)).collect();
        let room = matching.iter().any(|o| need.fits_in(&o.free()));
        match place(&need, Needs::default(), &constraints, &offers) {
            Ok(i) => {
                prop_assert!(room);
                prop_assert!(satisfies(&offers[i], &constraints));
                prop_assert!(within(&offers[i].used.plus(&need), &offers[i].total));
            }
            Err(why) => {
                prop_assert!(!room, "a worker had room but place said {why}");
                // The reason given is the right one of the four (every worker here does every
                // kind of work, so a task is never unsupported).
                match why {
                    Unplaceable::NoWorkers => prop_assert!(offers.is_empty()),
                    Unplaceable::Unsupported { .. } => prop_assert!(false, "every worker runs everything"),
                    Unplaceable::NoMatchingWorker { .. } => {
                        prop_assert!(!offers.is_empty() && matching.is_empty());
                    }
                    Unplaceable::TooLarge { largest_total, .. } => {
                        prop_assert!(matching.iter().all(|o| !need.fits_in(&o.total)));
                        prop_assert!(matching.iter().any(|o| o.total == largest_total));
                    }
                    Unplaceable::NoCapacity { largest_free, .. } => {
                        prop_assert!(matching.iter().any(|o| need.fits_in(&o.total)));
                        prop_assert!(matching.iter().any(|o| o.free() == largest_free));
                        prop_assert!(!need.fits_in(&largest_free));
                    }
                }
            }
        }
    }

    #[test]
    fn place_never_returns_a_worker_that_violates_a_constraint(
        need in grid_resources(4),
        constraints in proptest::collection::vec(constraint_strategy(), 1..4),
        offers in proptest::collection::vec(offer_strategy(), 1..8),
    ) {
        if let Ok(i) = place(&need, Needs::default(), &constraints, &offers) {
            prop_assert!(satisfies(&offers[i], &constraints));
        }
    }

    #[test]
    fn the_chosen_worker_is_least_loaded(
        need in grid_resources(8),
        offers in proptest::collection::vec(offer_strategy(), 1..6),
    ) {
        let load = |o: &Offer| {
            let after = o.used.plus(&need);
            [(after.cpus, o.total.cpus), (after.mem, o.total.mem), (after.disk, o.total.disk)]
                .into_iter()
                .map(|(a, t)| if t > 0.0 { a / t } else if a > 0.0 { f64::INFINITY } else { 0.0 })
                .fold(0.0, f64::max)
        };
        if let Ok(i) = place(&need, Needs::default(), &[], &offers) {
            let chosen = (load(&offers[i]), offers[i].worker.as_str());
            for o in offers.iter().filter(|o| need.fits_in(&o.free())) {
                let other = (load(o), o.worker.as_str());
                prop_assert!(chosen <= other, "chose {chosen:?} over {other:?}");
            }
        }
    }

    #[test]
    fn literal_constraints_follow_chronos(
        pairs in proptest::collection::vec(
            (proptest::sample::select(KEYS), proptest::sample::select(VALUES)),
            0..4,
        ),
        key in proptest::sample::select(KEYS),
        value in proptest::sample::select(VALUES),
    ) {
        let attributes = attrs(&pairs);
        let first = pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let literal = regex::escape(value);
        prop_assert_eq!(
            compile(key, "EQUALS", value).matches(&attributes),
            pairs.iter().any(|(k, v)| *k == key && *v == value)
        );
        prop_assert_eq!(compile(key, "LIKE", &literal).matches(&attributes), first == Some(value));
        prop_assert_eq!(
            compile(key, "UNLIKE", &literal).matches(&attributes),
            first.is_some_and(|v| v != value)
        );
    }

    #[test]
    fn any_text_compiles_or_fails_with_one_line(
        attribute in ".{0,8}",
        operator in proptest::sample::select(&["EQUALS", "LIKE", "UNLIKE", "NEAR"][..]),
        value in ".{0,12}",
    ) {
        match Constraint::compile(&attribute, operator, &value) {
            Ok(c) => {
                prop_assert_eq!(c.value(), value.as_str());
                let _ = c.matches(&attrs(&[(attribute.as_str(), value.as_str())]));
            }
            Err(e) => prop_assert!(!e.to_string().contains('\n'), "{}", e),
        }
    }

    #[test]
    fn minus_never_goes_below_zero(a in grid_resources(64), b in grid_resources(64)) {
        let d = a.minus(&b);
        prop_assert!(d.cpus >= 0.0 && d.mem >= 0.0 && d.disk >= 0.0);
        prop_assert_eq!(b.fits_in(&a), d.plus(&b) == a);
    }
}
