//! Starts a task's process the way `posix_spawn` does, with `clone(CLONE_VM | CLONE_VFORK)`, and
//! gives it the parent-death signal, which `posix_spawn` cannot.
//!
//! A task must die with its worker, or it would run on unseen while the scheduler retries it
//! elsewhere; Linux offers that as `PR_SET_PDEATHSIG`, set by the child between clone and exec.
//! std's `pre_exec` hook allows that but then falls back to `fork`, which copies the page tables
//! of the whole server and makes every page the server writes afterwards fault once: at a
//! thousand tasks a second that was a large share of the launch cost. A vfork-style child shares
//! the parent's memory until it calls exec, so a start costs the same whatever the server's size.
//!
//! A worker running as root also switches the child to the task's user there (groups, group,
//! user), before arming the death signal, which the kernel clears on any change of credentials.
//!
//! The child may not allocate or take locks (it runs on the parent's memory while the parent's
//! other threads go on), so everything it needs is prepared before the clone, and it only makes
//! system calls.

use std::ffi::{CString, OsStr, OsString, c_char, c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// A process to start: program, arguments, environment and working directory.
#[derive(Debug, Clone)]
pub struct Spawn {
    /// Searched in `PATH` (the task's own, if it sets one) unless it contains a `/`.
    pub program: OsString,
    /// Arguments after the program's name.
    pub args: Vec<OsString>,
    /// Variables set on top of the worker's own environment.
    pub env: Vec<(OsString, OsString)>,
    pub cwd: PathBuf,
    /// The user to become before exec; `None` keeps the worker's own.
    pub credentials: Option<Credentials>,
}

/// A user to start the process as: the groups are set first, then the group, then the user,
/// so that each step still has the rights the next one needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary one may be among them, as `login` sets it).
    pub groups: Vec<u32>,
}

/// A started process in its own process group, its pid being the group id. Its stdin is
/// `/dev/null`; its stdout and stderr are the read ends of two pipes.
#[derive(Debug)]
pub struct Child {
    pub pid: i32,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub exit: ExitWatch,
}

/// Waits for a started process's end through its pidfd.
#[derive(Debug)]
pub struct ExitWatch(OwnedFd);

/// How a process ended: its exit status, or the signal that ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// What the child does with the parent's prepared data; all pointers stay valid until it has
/// called exec or exited, because the parent is suspended until then.
struct ChildArgs {
    program: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    cwd: *const c_char,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    /// Whether to take on `uid`, `gid` and `groups` (`ngroups` of them).
    switch_user: bool,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: *const libc::gid_t,
    ngroups: usize,
    /// Receives `(step, errno)` if the child fails before exec.
    report: RawFd,
    parent: libc::pid_t,
    /// The parent thread's signal mask, restored just before exec.
    mask: libc::sigset_t,
}

/// Steps of the child, named in the error when one fails.
const STEP_DEATH_SIGNAL: c_int = 1;
const STEP_GROUP: c_int = 2;
const STEP_STDIO: c_int = 3;
const STEP_CWD: c_int = 4;
const STEP_EXEC: c_int = 5;
const STEP_USER: c_int = 6;

/// The child's stack; it only makes system calls through libc.
const CHILD_STACK: usize = 64 * 1024;

/// Linux's signal numbers run from 1 to 64.
const LAST_SIGNAL: c_int = 64;

extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` points at the parent's `ChildArgs`, alive while the parent waits for this
    // child's exec or exit; every call below is a system call wrapper that neither allocates nor
    // locks.
    unsafe {
        let args = &*(arg as *const ChildArgs);
        let fail = |step: c_int| -> ! {
            let report = [step, *libc::__errno_location()];
            libc::write(
                args.report,
                report.as_ptr().cast(),
                std::mem::size_of_val(&report),
            );
            libc::_exit(127)
        };
        // Handlers are the parent's code; none may run here, and the program starts with defaults
        // (std ignores SIGPIPE, which a shell script must not inherit).
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for signal in 1..=LAST_SIGNAL {
            libc::sigaction(signal, &default, std::ptr::null_mut());
        }
        // Its own process group, so that kill reaches everything the task started.
        if libc::setpgid(0, 0) != 0 {
            fail(STEP_GROUP);
        }
        for (from, to) in [(args.stdin, 0), (args.stdout, 1), (args.stderr, 2)] {
            // dup2 onto the same number would keep close-on-exec set.
            let ok = if from == to {
                libc::fcntl(to, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(from, to) == to
            };
            if !ok {
                fail(STEP_STDIO);
            }
        }
        if args.switch_user {
            // Raw system calls: glibc's wrappers would signal the threads of the parent, whose
            // memory this child shares, to change their credentials too. Groups, then group,
            // then user: after setresuid there is no right left to change the others. The real,
            // effective and saved ids all change, so the task cannot switch back.
            if libc::syscall(libc::SYS_setgroups, args.ngroups, args.groups) != 0
                || libc::syscall(libc::SYS_setresgid, args.gid, args.gid, args.gid) != 0
                || libc::syscall(libc::SYS_setresuid, args.uid, args.uid, args.uid) != 0
            {
                fail(STEP_USER);
            }
        }
        // Armed after the change of user: the kernel clears the death signal whenever a
        // process's credentials change.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            fail(STEP_DEATH_SIGNAL);
        }
        // The worker may have died before the death signal was armed.
        if libc::getppid() != args.parent {
            libc::_exit(127);
        }
        // Entered as the task's user, so a directory it may not enter fails here, named.
        if libc::chdir(args.cwd) != 0 {
            fail(STEP_CWD);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &args.mask, std::ptr::null_mut());
        libc::execve(args.program, args.argv, args.envp);
        fail(STEP_EXEC)
    }
}

fn c_string(text: &OsStr) -> io::Result<CString> {
    CString::new(text.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "contains a NUL byte"))
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: pipe2 fills the two descriptors, which we then own.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

/// Finds `program` in `path` the way a shell does, when it has no `/`.
fn resolve(program: &OsStr, path: Option<&OsStr>) -> PathBuf {
    if program.as_bytes().contains(&b'/') {
        return PathBuf::from(program);
    }
    let path = path.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    for dir in std::env::split_paths(path) {
        let candidate = dir.join(program);
        let Ok(c) = c_string(candidate.as_os_str()) else {
            continue;
        };
        // SAFETY: access only reads the NUL-terminated path.
        if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 && candidate.is_file() {
            return candidate;
        }
    }
    // Not found: exec reports ENOENT for the name as given.
    PathBuf::from(program)
}

/// The worker's own environment as `KEY=value` strings, read once: it does not change while the
/// worker runs, and reading and converting it for every task was a visible part of a launch.
fn base_environment() -> &'static [(OsString, CString)] {
    static BASE: OnceLock<Vec<(OsString, CString)>> = OnceLock::new();
    BASE.get_or_init(|| {
        std::env::vars_os()
            .filter_map(|(key, value)| Some((key.clone(), entry(key, &value).ok()?)))
            .collect()
    })
}

fn entry(mut key: OsString, value: &OsStr) -> io::Result<CString> {
    key.push("=");
    key.push(value);
    c_string(&key)
}

/// Starts the process and returns once it has called exec.
///
/// # Errors
/// Fails with the reason when the program cannot be started (missing, not executable, a bad
/// working directory); nothing runs then.
pub fn spawn(spec: &Spawn) -> io::Result<Child> {
    let task_path = spec.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone());
    let path = task_path.or_else(|| std::env::var_os("PATH"));
    let program = c_string(resolve(&spec.program, path.as_deref()).as_os_str())?;
    let mut argv_owned = vec![c_string(&spec.program)?];
    for arg in &spec.args {
        argv_owned.push(c_string(arg)?);
    }
    let mut task_env = Vec::with_capacity(spec.env.len());
    for (key, value) in &spec.env {
        task_env.push(entry(key.clone(), value)?);
    }
    let cwd = c_string(spec.cwd.as_os_str())?;
    let argv: Vec<*const c_char> = argv_owned
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    // The task's variables replace the worker's of the same name.
    let envp: Vec<*const c_char> = base_environment()
        .iter()
        .filter(|(key, _)| !spec.env.iter().any(|(k, _)| k == key))
        .map(|(_, entry)| entry.as_ptr())
        .chain(task_env.iter().map(|e| e.as_ptr()))
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let (stdout_r, stdout_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    let (report_r, report_w) = pipe()?;
    let devnull = std::fs::File::open("/dev/null")?;
    let mut stack = vec![0u8; CHILD_STACK];
    let groups: Vec<libc::gid_t> = spec
        .credentials
        .as_ref()
        .map(|c| c.groups.clone())
        .unwrap_or_default();

    // SAFETY: the child only reads `args` and the buffers it points into, all of which outlive
    // the clone call: with CLONE_VFORK this thread is suspended until the child has exec'd or
    // exited. Signals are blocked around the clone so that no handler of the server runs in the
    // child before it has reset them.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut args = ChildArgs {
            program: program.as_ptr(),
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            cwd: cwd.as_ptr(),
            stdin: devnull.as_raw_fd(),
            stdout: stdout_w.as_raw_fd(),
            stderr: stderr_w.as_raw_fd(),
            switch_user: spec.credentials.is_some(),
            uid: spec.credentials.as_ref().map_or(0, |c| c.uid),
            gid: spec.credentials.as_ref().map_or(0, |c| c.gid),
            groups: groups.as_ptr(),
            ngroups: groups.len(),
            report: report_w.as_raw_fd(),
            parent: libc::getpid(),
            mask: old,
        };
        // The stack grows down from its end, which must be 16-byte aligned.
        let top = stack.as_mut_ptr().add(CHILD_STACK) as usize & !15;
        let pid = libc::clone(
            child_main,
            top as *mut c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut args as *mut ChildArgs).cast(),
        );
        let error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(error);
        }
        pid
    };
    drop((stdout_w, stderr_w, report_w, devnull));
    let mut report = [0 as c_int; 2];
    let got = read_full(&report_r, &mut report);
    if got == std::mem::size_of_val(&report) {
        reap(pid);
        let cause = io::Error::from_raw_os_error(report[1]);
        let step = match report[0] {
            STEP_DEATH_SIGNAL => "cannot set the parent-death signal",
            STEP_GROUP => "cannot make a process group",
            STEP_STDIO => "cannot connect the output pipes",
            STEP_CWD => "cannot enter the working directory",
            STEP_USER => "cannot switch to the task's user",
            _ => return Err(cause),
        };
        return Err(io::Error::new(cause.kind(), format!("{step}: {cause}")));
    }
    if got != 0 {
        // Cannot happen: the child writes the report whole or not at all.
        reap(pid);
        return Err(io::Error::other("the child's start report was cut short"));
    }
    // SAFETY: pidfd_open returns a new descriptor for our own unreaped child.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as c_int;
    if pidfd < 0 {
        let error = io::Error::last_os_error();
        // SAFETY: the child is ours; kill it and reap it, since it cannot be waited for otherwise.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        reap(pid);
        return Err(error);
    }
    Ok(Child {
        pid,
        stdout: stdout_r,
        stderr: stderr_r,
        // SAFETY: pidfd_open returned a fresh descriptor, now owned here.
        exit: ExitWatch(unsafe { OwnedFd::from_raw_fd(pidfd) }),
    })
}

/// Reads until `buf` is full or the pipe ends; returns the bytes read.
fn read_full(fd: &OwnedFd, buf: &mut [c_int; 2]) -> usize {
    let len = std::mem::size_of_val(buf);
    let base: *mut u8 = buf.as_mut_ptr().cast();
    let mut got = 0;
    while got < len {
        // SAFETY: reads into the remaining part of `buf`.
        let n = unsafe { libc::read(fd.as_raw_fd(), base.add(got).cast(), len - got) };
        if n > 0 {
            got += n as usize;
        } else if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    got
}

/// Waits for a child that failed before exec, so it leaves no zombie.
fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waits for our own child only.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
}

impl ExitWatch {
    /// Waits for the process to end, without a thread: the pidfd becomes readable when it does.
    ///
    /// # Errors
    /// Fails only if the descriptor cannot be watched or waited on.
    pub async fn wait(self) -> io::Result<Exit> {
        // SAFETY: an OwnedFd stays open, and the same descriptor, for as long as the AsyncFd owns it.
        let fd = unsafe { AsyncFd::register_with_interest(self.0, Interest::READABLE) }
            .map_err(io::Error::from)?;
        loop {
            let mut ready = fd.readable().await?;
            // SAFETY: waitid fills `info` for our own child, named by its pidfd.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let done = unsafe {
                libc::waitid(
                    libc::P_PIDFD,
                    fd.get_ref().as_raw_fd() as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG,
                )
            };
            if done < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            // SAFETY: the fields were filled by waitid (a zero pid means it still runs).
            let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
            if pid == 0 {
                ready.clear_ready();
                continue;
            }
            return Ok(if info.si_code == libc::CLD_EXITED {
                Exit::Code(status)
            } else {
                Exit::Signal(status)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn spec(program: &str, args: &[&str]) -> Spawn {
        Spawn {
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            env: vec![("KAIROS_SPAWN_TEST".into(), "here".into())],
            cwd: std::env::temp_dir(),
            credentials: None,
        }
    }

    async fn output(fd: OwnedFd) -> String {
        let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd).unwrap();
        let mut text = String::new();
        pipe.read_to_string(&mut text).await.unwrap();
        text
    }

    #[tokio::test]
    async fn runs_with_its_environment_directory_and_group_and_reports_the_status() {
        let script = "echo $KAIROS_SPAWN_TEST $(pwd); cut -d' ' -f5 /proc/$$/stat >&2; exit 7";
        let child = spawn(&spec("sh", &["-c", script])).unwrap();
        let (out, err, exit) = tokio::join!(output(child.stdout), output(child.stderr), child.exit.wait());
        assert_eq!(exit.unwrap(), Exit::Code(7));
        let tmp = std::env::temp_dir().canonicalize().unwrap();
        assert_eq!(out, format!("here {}\n", tmp.display()));
        assert_eq!(
            err.trim(),
            child.pid.to_string(),
            "the task leads its own process group"
        );
    }

    #[tokio::test]
    async fn the_process_dies_with_its_parent() {
        // Linux sends the death signal when the thread that started the child ends, which is
        // the easiest parent death to arrange inside a test.
        let child = std::thread::spawn(|| spawn(&spec("sleep", &["30"])).unwrap())
            .join()
            .unwrap();
        let exit = tokio::time::timeout(std::time::Duration::from_secs(10), child.exit.wait()).await;
        assert_eq!(exit.expect("ended").unwrap(), Exit::Signal(libc::SIGKILL));
    }

    fn is_root() -> bool {
        // SAFETY: geteuid only reads the process's credentials.
        unsafe { libc::geteuid() == 0 }
    }

    fn as_nobody(mut spec: Spawn) -> Spawn {
        spec.credentials = Some(Credentials {
            uid: 65534,
            gid: 65534,
            groups: vec![65534, 4242],
        });
        spec
    }

    #[tokio::test]
    async fn the_process_runs_with_the_given_user_group_and_groups() {
        if !is_root() {
            // Only root can start a process as another user.
            return;
        }
        let script = "id -u; id -g; id -G; cat /proc/self/status | grep -E '^(Uid|Gid):'";
        let child = spawn(&as_nobody(spec("sh", &["-c", script]))).unwrap();
        let (out, exit) = tokio::join!(output(child.stdout), child.exit.wait());
        assert_eq!(exit.unwrap(), Exit::Code(0));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[..3], ["65534", "65534", "65534 4242"], "{out}");
        // Real, effective, saved and file-system ids all changed: no way back to root.
        assert_eq!(
            lines[3].split_whitespace().collect::<Vec<_>>(),
            ["Uid:", "65534", "65534", "65534", "65534"]
        );
        assert_eq!(
            lines[4].split_whitespace().collect::<Vec<_>>(),
            ["Gid:", "65534", "65534", "65534", "65534"]
        );
    }

    #[tokio::test]
    async fn a_process_started_as_another_user_still_dies_with_its_parent() {
        if !is_root() {
            return;
        }
        let child = std::thread::spawn(|| spawn(&as_nobody(spec("sleep", &["30"]))).unwrap())
            .join()
            .unwrap();
        let exit = tokio::time::timeout(std::time::Duration::from_secs(10), child.exit.wait()).await;
        assert_eq!(exit.expect("ended").unwrap(), Exit::Signal(libc::SIGKILL));
    }

    #[test]
    fn a_directory_the_user_may_not_enter_fails_the_start() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let mut private = as_nobody(spec("true", &[]));
        private.cwd = dir.path().to_owned();
        let error = spawn(&private).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied, "{error}");
        assert!(error.to_string().contains("working directory"), "{error}");
    }

    #[tokio::test]
    async fn a_signal_ending_the_process_is_reported() {
        let child = spawn(&spec("/bin/sh", &["-c", "kill -TERM $$"])).unwrap();
        assert_eq!(child.exit.wait().await.unwrap(), Exit::Signal(libc::SIGTERM));
    }

    #[tokio::test]
    async fn sigpipe_is_not_inherited_as_ignored() {
        // `yes` dies of SIGPIPE once `head` is done; had it inherited SIGPIPE ignored (as std sets
        // it in the server), it would get EPIPE and exit 1 with a complaint instead.
        let script = "(yes; echo $? >&2) | head -c 1 >/dev/null";
        let child = spawn(&spec("/bin/sh", &["-c", script])).unwrap();
        let (err, exit) = tokio::join!(output(child.stderr), child.exit.wait());
        assert_eq!(exit.unwrap(), Exit::Code(0));
        assert_eq!(
            err.trim(),
            (128 + libc::SIGPIPE).to_string(),
            "yes was killed by SIGPIPE"
        );
    }

    #[test]
    fn failures_before_exec_name_the_cause() {
        let missing = spawn(&spec("/nonexistent/program", &[])).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound, "{missing}");
        let mut bad_dir = spec("true", &[]);
        bad_dir.cwd = PathBuf::from("/nonexistent/dir");
        let error = spawn(&bad_dir).unwrap_err();
        assert!(error.to_string().contains("working directory"), "{error}");
        let not_found_in_path = spawn(&spec("kairos-no-such-program", &[])).unwrap_err();
        assert_eq!(not_found_in_path.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn programs_are_found_in_the_tasks_own_path_first() {
        use std::path::Path;
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("kairos-spawn-tool");
        std::fs::write(&tool, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([dir.path(), Path::new("/bin")]).unwrap();
        assert_eq!(resolve(OsStr::new("kairos-spawn-tool"), Some(&path)), tool);
        assert_eq!(resolve(OsStr::new("./x"), Some(&path)), PathBuf::from("./x"));
    }
}
