//! Fuzzes the Chronos task id parser, `job::TaskId::parse`: any accepted id prints back as the
//! same text, parses again to an equal id, and its parts read back without failing and make the
//! same id again through `TaskId::new`.
//!
//! Input: the id text.
#![no_main]

use kairos::job::TaskId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(id) = TaskId::parse(text) else {
        return;
    };
    let printed = id.to_string();
    assert_eq!(printed, text);
    assert_eq!(TaskId::parse(&printed).as_ref(), Some(&id));
    let (due, attempt, job, arguments) = (id.due_millis(), id.attempt(), id.job(), id.arguments());
    assert!(kairos::job::is_valid_name(job), "{text:?}");
    let made = TaskId::new(due, attempt, job, arguments);
    let reparsed = TaskId::parse(&made).unwrap_or_else(|| panic!("{made:?} from {text:?} does not parse"));
    assert_eq!(
        (reparsed.due_millis(), reparsed.attempt(), reparsed.job()),
        (due, attempt, job),
        "{text:?}"
    );
    assert_eq!(reparsed.arguments(), arguments.replace(';', ""));
    // A sandbox is one directory named from the id, never a path that climbs out.
    let name = kairos::executor::sandbox_name(&id);
    assert!(
        !name.is_empty() && name != "." && name != ".." && !name.contains('/'),
        "{name:?}"
    );
});
