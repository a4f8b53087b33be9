//! Who a task runs as: its `runAsUser` looked up on the worker (uid, gid, groups, home), the
//! rules for a worker that is not root, and the two things done with another user's rights
//! before the task starts: handing it its sandbox, and reading a local file for its fetch.
//!
//! Lookups go through the C library (`getpwnam_r`, `getgrouplist`), so whatever the host's
//! name service knows (files, LDAP, sssd) is honoured, as `login` would.

use std::ffi::{CStr, CString, c_char};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("runAsUser '{user}' does not exist on this worker")]
    NoSuchUser { user: String },
    #[error("cannot look up runAsUser '{user}' on this worker: {source}")]
    Lookup {
        user: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot run as runAsUser '{user}': this worker runs as '{worker}', not as root, and only root can start a task as another user"
    )]
    NotRoot { user: String, worker: String },
}

/// The user whose rights the worker itself has, and who may run any task as itself.
const ROOT: &str = "root";

/// A user account of this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Every group the user is in, its primary group included (what `login` would set).
    pub groups: Vec<u32>,
    pub home: PathBuf,
}

/// Who a task runs as on this worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The worker's own user, unchanged: the task has no `runAsUser`, or the worker is not root
    /// and the task asks for the worker's own user or for the default `root`.
    Worker,
    /// This account: the worker is root and switches to it before the task starts.
    Switch(Account),
    /// A container's user that has no account on this host: Docker resolves it in the image,
    /// but no local file can be read on its behalf.
    Foreign(String),
}

impl Identity {
    /// Who a process task runs as. A worker running as root starts it as `user`, which must
    /// exist; a worker that is not root cannot switch users, so it runs the task as itself
    /// when `user` is its own user or the default `root` (as kairos always did) and refuses
    /// any other user.
    ///
    /// # Errors
    /// A user missing on this host, a failed lookup, or another user on a worker without root.
    pub fn for_process(user: Option<&str>) -> Result<Identity, Error> {
        // SAFETY: geteuid only reads the process's credentials.
        Identity::for_process_as(user, unsafe { libc::geteuid() })
    }

    fn for_process_as(user: Option<&str>, euid: u32) -> Result<Identity, Error> {
        let Some(user) = user.filter(|u| !u.is_empty()) else {
            return Ok(Identity::Worker);
        };
        if euid == 0 {
            return match lookup(user)? {
                Some(account) => Ok(Identity::Switch(account)),
                None => Err(Error::NoSuchUser {
                    user: user.to_owned(),
                }),
            };
        }
        let worker = name_of(euid)?.unwrap_or_else(|| euid.to_string());
        if user == worker || user == ROOT {
            Ok(Identity::Worker)
        } else {
            Err(Error::NotRoot {
                user: user.to_owned(),
                worker,
            })
        }
    }

    /// Whose rights a container task's fetches and sandbox get. Docker starts the container
    /// as `user` (resolved in the image), whatever this worker runs as; on this host the same
    /// name is looked up: a worker running as root reads local files as that account and hands
    /// it the sandbox, and reads no local file for a name the host does not know.
    ///
    /// # Errors
    /// Only a failed lookup.
    pub fn for_container(user: Option<&str>) -> Result<Identity, Error> {
        let Some(user) = user.filter(|u| !u.is_empty()) else {
            return Ok(Identity::Worker);
        };
        // SAFETY: geteuid only reads the process's credentials.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(Identity::Worker);
        }
        Ok(match lookup(user)? {
            Some(account) => Identity::Switch(account),
            None => Identity::Foreign(user.to_owned()),
        })
    }

    /// The account the task switches to, if it does.
    pub fn account(&self) -> Option<&Account> {
        match self {
            Identity::Switch(account) => Some(account),
            Identity::Worker | Identity::Foreign(_) => None,
        }
    }

    /// `HOME`, `USER` and `LOGNAME` of the account switched to, as `login` sets them; a task
    /// running as the worker keeps the worker's.
    pub fn environment(&self) -> Vec<(String, String)> {
        match self.account() {
            Some(account) => vec![
                ("HOME".to_owned(), account.home.display().to_string()),
                ("USER".to_owned(), account.name.clone()),
                ("LOGNAME".to_owned(), account.name.clone()),
            ],
            None => Vec::new(),
        }
    }

    /// Opens a local file for reading with the task's rights: only what `runAsUser` could read
    /// itself is read for it.
    ///
    /// # Errors
    /// The file cannot be opened as that user (`PermissionDenied` when it may not), or the
    /// user is a container's with no account here.
    pub fn open(&self, path: &Path) -> io::Result<std::fs::File> {
        match self {
            Identity::Worker => std::fs::File::open(path),
            Identity::Switch(account) => open_as(path, account),
            Identity::Foreign(user) => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("runAsUser '{user}' has no account on this worker, so no local file is read for it"),
            )),
        }
    }

    /// Gives the account switched to everything under `dir` (the sandbox, with what was fetched
    /// into it), so that the task can write there. Links are changed themselves, never followed.
    ///
    /// # Errors
    /// The first entry that cannot be changed.
    pub fn hand_over(&self, dir: &Path) -> io::Result<()> {
        match self.account() {
            Some(account) => chown_tree(dir, account.uid, account.gid),
            None => Ok(()),
        }
    }
}

/// Looks a user up by name; `None` when there is no such user.
///
/// # Errors
/// The name service failed (not: the user does not exist).
pub fn lookup(name: &str) -> Result<Option<Account>, Error> {
    let failed = |source: io::Error| Error::Lookup {
        user: name.to_owned(),
        source,
    };
    let Ok(c_name) = CString::new(name) else {
        return Ok(None);
    };
    let mut buf = vec![0 as c_char; 1024];
    loop {
        // SAFETY: an all-zero passwd is a valid value of a C struct of pointers and integers.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: getpwnam_r writes `pwd` and strings into `buf` (of the given length) only,
        // and sets `found` to `&pwd` or null.
        let rc =
            unsafe { libc::getpwnam_r(c_name.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(failed(io::Error::from_raw_os_error(rc)));
        }
        if found.is_null() {
            return Ok(None);
        }
        // SAFETY: on success the strings point into `buf`, NUL-terminated, and live as long as it.
        let (user, home) = unsafe { (cstr(pwd.pw_name), cstr(pwd.pw_dir)) };
        let groups = groups_of(&c_name, pwd.pw_gid).map_err(failed)?;
        return Ok(Some(Account {
            name: user,
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            groups,
            home: PathBuf::from(home),
        }));
    }
}

/// # Safety
/// `text` is null or a NUL-terminated string.
unsafe fn cstr(text: *const c_char) -> String {
    if text.is_null() {
        return String::new();
    }
    // SAFETY: the caller guarantees a NUL-terminated string.
    unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned()
}

/// The groups of `user`, whose primary group is `gid`.
fn groups_of(user: &CStr, gid: u32) -> io::Result<Vec<u32>> {
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut count = c_int_len(groups.len());
        // SAFETY: getgrouplist writes at most `count` ids into `groups` and sets `count` to how
        // many there are.
        let rc = unsafe { libc::getgrouplist(user.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        let count = usize::try_from(count).unwrap_or(0);
        if rc >= 0 {
            groups.truncate(count);
            return Ok(groups);
        }
        if count <= groups.len() || count > 65_536 {
            return Err(io::Error::other("the group list cannot be read"));
        }
        groups.resize(count, 0);
    }
}

fn c_int_len(len: usize) -> libc::c_int {
    libc::c_int::try_from(len).unwrap_or(libc::c_int::MAX)
}

/// The name of the user with this uid, if it has one.
fn name_of(uid: u32) -> Result<Option<String>, Error> {
    let mut buf = vec![0 as c_char; 1024];
    loop {
        // SAFETY: as in `lookup`.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: as in `lookup`.
        let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(Error::Lookup {
                user: uid.to_string(),
                source: io::Error::from_raw_os_error(rc),
            });
        }
        // SAFETY: as in `lookup`.
        return Ok((!found.is_null()).then(|| unsafe { cstr(pwd.pw_name) }));
    }
}

/// Opens `path` for reading with `account`'s file-system rights, so the kernel itself decides
/// (permission bits, groups, ACLs, every directory on the way, links followed as that user).
///
/// Linux keeps credentials per thread, and glibc only makes them process-wide by signalling
/// every thread. A short-lived thread of its own sets its file-system ids and groups with the
/// raw system calls, which change that thread alone, opens the file and ends, taking the
/// borrowed rights with it; the descriptor it opened works in any thread. When the fs uid
/// leaves 0, the kernel also drops the thread's capabilities that override file permissions.
fn open_as(path: &Path, account: &Account) -> io::Result<std::fs::File> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path contains a NUL byte"))?;
    let account = account.clone();
    std::thread::Builder::new()
        .name("kairos-open-as".to_owned())
        .spawn(move || {
            let groups: Vec<libc::gid_t> = account.groups.clone();
            // SAFETY: raw system calls on this thread's own credentials; `groups` outlives the
            // call. setfsuid/setfsgid return the previous id and cannot fail loudly, so each
            // is checked by reading it back (an id of -1 changes nothing and returns the id).
            unsafe {
                if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                libc::syscall(libc::SYS_setfsgid, account.gid);
                libc::syscall(libc::SYS_setfsuid, account.uid);
                let gid = libc::syscall(libc::SYS_setfsgid, u32::MAX);
                let uid = libc::syscall(libc::SYS_setfsuid, u32::MAX);
                if gid != i64::from(account.gid) || uid != i64::from(account.uid) {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "cannot take on the user's file-system rights",
                    ));
                }
                let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(<std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd))
            }
        })?
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the thread opening the file panicked")))
}

/// `lchown` on `dir` and everything under it, without following links.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    if !std::fs::symlink_metadata(dir)?.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            chown_tree(&path, uid, gid)?;
        } else {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// Every test host has these two, with their usual ids.
    fn nobody() -> Account {
        lookup("nobody")
            .unwrap()
            .expect("the test host has a 'nobody' user")
    }

    fn is_root() -> bool {
        // SAFETY: geteuid only reads the process's credentials.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn accounts_are_looked_up_with_their_groups_and_home() {
        let root = lookup("root").unwrap().expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0), "{root:?}");
        assert_eq!(root.home, PathBuf::from("/root"));
        let nobody = nobody();
        assert_ne!(nobody.uid, 0);
        assert!(nobody.groups.contains(&nobody.gid), "{nobody:?}");
        assert_eq!(lookup("kairos-no-such-user").unwrap(), None);
        assert_eq!(lookup("bad\0name").unwrap(), None);
    }

    #[test]
    fn a_root_worker_switches_to_the_user_and_refuses_a_missing_one() {
        assert_eq!(Identity::for_process_as(None, 0).unwrap(), Identity::Worker);
        assert_eq!(Identity::for_process_as(Some(""), 0).unwrap(), Identity::Worker);
        assert_eq!(
            Identity::for_process_as(Some("nobody"), 0).unwrap(),
            Identity::Switch(nobody())
        );
        let error = Identity::for_process_as(Some("kairos-no-such-user"), 0).unwrap_err();
        assert_eq!(
            error.to_string(),
            "runAsUser 'kairos-no-such-user' does not exist on this worker"
        );
    }

    #[test]
    fn a_worker_without_root_runs_only_its_own_user_or_the_default_root() {
        let nobody = nobody();
        assert_eq!(
            Identity::for_process_as(Some("nobody"), nobody.uid).unwrap(),
            Identity::Worker
        );
        assert_eq!(
            Identity::for_process_as(Some("root"), nobody.uid).unwrap(),
            Identity::Worker,
            "the default runAsUser runs as the worker, as before"
        );
        let error = Identity::for_process_as(Some("daemon"), nobody.uid).unwrap_err();
        assert!(matches!(error, Error::NotRoot { .. }), "{error:?}");
        assert!(error.to_string().contains("'daemon'"), "{error}");
        assert!(error.to_string().contains("runs as 'nobody'"), "{error}");
    }

    #[test]
    fn the_environment_is_the_accounts() {
        let nobody = nobody();
        let env = Identity::Switch(nobody.clone()).environment();
        assert_eq!(
            env,
            [
                ("HOME".to_owned(), nobody.home.display().to_string()),
                ("USER".to_owned(), "nobody".to_owned()),
                ("LOGNAME".to_owned(), "nobody".to_owned()),
            ]
        );
        assert!(Identity::Worker.environment().is_empty());
    }

    #[test]
    fn files_are_opened_with_the_users_rights_only() {
        if !is_root() {
            // Without root no thread can take on another user's rights; the other tests cover
            // a worker running as itself.
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "root only").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let public = dir.path().join("public");
        std::fs::write(&public, "anyone").unwrap();
        std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).unwrap();

        let as_nobody = Identity::Switch(nobody());
        let error = as_nobody.open(&secret).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied, "{error}");
        let text = std::io::read_to_string(as_nobody.open(&public).unwrap()).unwrap();
        assert_eq!(text, "anyone");
        // The worker's own rights are untouched by the borrowing thread.
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root only");
        assert!(Identity::Worker.open(&secret).is_ok());
        let foreign = Identity::Foreign("app".to_owned()).open(&public).unwrap_err();
        assert_eq!(foreign.kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn hand_over_gives_the_whole_sandbox_and_follows_no_link() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir_all(sandbox.join("sub")).unwrap();
        std::fs::write(sandbox.join("sub/file"), "x").unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "not the task's").unwrap();
        std::os::unix::fs::symlink(&outside, sandbox.join("link")).unwrap();
        let nobody = nobody();
        Identity::Switch(nobody.clone()).hand_over(&sandbox).unwrap();
        for path in ["", "sub", "sub/file", "link"] {
            let meta = std::fs::symlink_metadata(sandbox.join(path)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (nobody.uid, nobody.gid), "{path}");
        }
        assert_eq!(
            std::fs::metadata(&outside).unwrap().uid(),
            0,
            "the link's target is untouched"
        );
    }
}
