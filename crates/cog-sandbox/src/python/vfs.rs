//! The read-only, in-memory file system a Python plugin sees: the standard
//! library, loaded once per process and shared by every interpreter. No
//! path reaches the host's files: lookups walk this tree only, and `..` at
//! the root stays at the root.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;

/// Where the standard library sits: CPython looks for it next to its
/// executable (`/`), so it finds it there without any environment.
pub(crate) const STDLIB: &str = "lib/python3.11";

/// A node: an index into [`Vfs::nodes`]; the root is 0.
pub(crate) type Node = u32;

pub(crate) enum Entry {
    Dir(BTreeMap<Box<str>, Node>),
    File(Bytes),
}

pub(crate) struct Vfs {
    nodes: Vec<(Entry, Node)>,
    /// Bytes of all files.
    pub(crate) bytes: u64,
}

/// Why a lookup failed, as a WASI errno.
pub(crate) type Errno = i32;
pub(crate) const ENOENT: Errno = 44;
pub(crate) const ENOTDIR: Errno = 54;
pub(crate) const ENAMETOOLONG: Errno = 37;

impl Vfs {
    pub(crate) fn empty() -> Self {
        Vfs {
            nodes: vec![(Entry::Dir(BTreeMap::new()), 0)],
            bytes: 0,
        }
    }

    /// `/lib/python3.11` holding the files under `stdlib` (a
    /// host directory, read whole now; symlinks are not followed).
    pub(crate) fn with_stdlib(stdlib: &Path) -> std::io::Result<Self> {
        let mut vfs = Vfs::empty();
        let mut at = 0;
        for part in STDLIB.split('/') {
            at = vfs.mkdir(at, part);
        }
        vfs.load(at, stdlib)?;
        Ok(vfs)
    }

    fn mkdir(&mut self, parent: Node, name: &str) -> Node {
        if let Some(Entry::Dir(children)) = self.nodes.get(parent as usize).map(|n| &n.0)
            && let Some(&n) = children.get(name)
        {
            return n;
        }
        self.add(parent, name, Entry::Dir(BTreeMap::new()))
    }

    fn add(&mut self, parent: Node, name: &str, entry: Entry) -> Node {
        let node = self.nodes.len() as Node;
        self.nodes.push((entry, parent));
        if let Entry::Dir(children) = &mut self.nodes[parent as usize].0 {
            children.insert(name.into(), node);
        }
        node
    }

    fn load(&mut self, dir: Node, from: &Path) -> std::io::Result<()> {
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let ty = entry.file_type()?;
            if ty.is_dir() {
                let sub = self.mkdir(dir, name);
                self.load(sub, &entry.path())?;
            } else if ty.is_file() {
                let data = std::fs::read(entry.path())?;
                self.bytes += data.len() as u64;
                self.add(dir, name, Entry::File(data.into()));
            }
        }
        Ok(())
    }

    pub(crate) fn entry(&self, node: Node) -> &Entry {
        &self.nodes[node as usize].0
    }

    pub(crate) fn parent(&self, node: Node) -> Node {
        self.nodes[node as usize].1
    }

    /// Inode numbers: nodes from 1.
    pub(crate) fn ino(node: Node) -> u64 {
        u64::from(node) + 1
    }

    /// `path` (relative; a leading `/` counts from the root too) from
    /// `from`.
    pub(crate) fn lookup(&self, from: Node, path: &[u8]) -> Result<Node, Errno> {
        if path.len() > 4096 {
            return Err(ENAMETOOLONG);
        }
        let mut at = if path.first() == Some(&b'/') { 0 } else { from };
        for part in path.split(|&b| b == b'/') {
            match part {
                b"" | b"." => continue,
                b".." => at = self.parent(at),
                name => {
                    let Entry::Dir(children) = self.entry(at) else {
                        return Err(ENOTDIR);
                    };
                    let name = std::str::from_utf8(name).map_err(|_| ENOENT)?;
                    at = *children.get(name).ok_or(ENOENT)?;
                }
            }
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> Vfs {
        let mut v = Vfs::empty();
        let usr = v.mkdir(0, "usr");
        v.add(usr, "a.txt", Entry::File(Bytes::from_static(b"hi")));
        v
    }

    #[test]
    fn lookups_stay_inside_the_tree() {
        let v = tree();
        let usr = v.lookup(0, b"usr").unwrap();
        let file = v.lookup(0, b"usr/a.txt").unwrap();
        assert_eq!(v.lookup(usr, b"a.txt"), Ok(file));
        assert_eq!(v.lookup(usr, b"./../usr//a.txt"), Ok(file));
        // `..` at the root is the root: no way out.
        assert_eq!(v.lookup(0, b"../../../usr/a.txt"), Ok(file));
        assert_eq!(v.lookup(0, b"/etc/passwd"), Err(ENOENT));
        assert_eq!(v.lookup(0, b"usr/a.txt/x"), Err(ENOTDIR));
        assert_eq!(v.lookup(0, &[b'a'; 5000]), Err(ENAMETOOLONG));
        assert_eq!(v.lookup(0, b"usr/\xff"), Err(ENOENT));
    }
}
