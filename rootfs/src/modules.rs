//! Kernel module selection: which `.ko` files a firmware needs, and in which order to load them.
//!
//! Dependencies come from `modules.dep` when the tree has one. Debian's kernel packages do not
//! ship it (their postinst runs depmod), so without it the `depends=` field of each module's
//! `.modinfo` ELF section is read instead, which is what depmod itself uses.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Largest index file (`modules.dep`, `modules.builtin`) accepted.
const MAX_INDEX_SIZE: u64 = 32 << 20;
/// Largest module accepted, compressed or not (the biggest Debian modules are a few MiB).
const MAX_MODULE_SIZE: u64 = 64 << 20;
/// Deepest directory nesting walked when indexing a tree without `modules.dep`.
const MAX_WALK_DEPTH: usize = 16;

/// Why a module plan could not be made; the message names the file or module concerned.
#[derive(Debug)]
pub struct ModuleError(String);

impl fmt::Display for ModuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ModuleError {}

fn io_error(path: &Path, e: io::Error) -> ModuleError {
    ModuleError(format!("{}: {e}", path.display()))
}

/// How a module file is stored in the kernel package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain `.ko`.
    None,
    /// `.ko.xz` (Debian's default).
    Xz,
    /// `.ko.gz`.
    Gzip,
}

/// One module to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Canonical module name (`-` folded to `_`), e.g. `virtio_blk`.
    pub name: String,
    /// Path relative to the modules directory as the package stores it, e.g.
    /// `kernel/drivers/block/virtio_blk.ko.xz`.
    pub source_path: String,
    /// How the package stores the file; installed modules are decompressed.
    pub compression: Compression,
}

impl Module {
    /// Path relative to the modules directory once installed uncompressed (`….ko`): busybox
    /// insmod and kernels without `CONFIG_MODULE_DECOMPRESS` only take plain ELF modules.
    pub fn installed_path(&self) -> String {
        match self.compression {
            Compression::None => self.source_path.clone(),
            Compression::Xz => self.source_path.trim_end_matches(".xz").to_string(),
            Compression::Gzip => self.source_path.trim_end_matches(".gz").to_string(),
        }
    }

    /// Reads the module from `modules_dir` and returns its uncompressed ELF bytes.
    pub fn read_uncompressed(&self, modules_dir: &Path) -> Result<Vec<u8>, ModuleError> {
        let path = modules_dir.join(&self.source_path);
        let raw = read_bounded(&path, MAX_MODULE_SIZE)?;
        let mut out = LimitedWriter::new(MAX_MODULE_SIZE as usize);
        match self.compression {
            Compression::None => return Ok(raw),
            Compression::Xz => lzma_rs::xz_decompress(&mut &raw[..], &mut out)
                .map_err(|e| ModuleError(format!("{}: bad xz data: {e}", path.display())))?,
            Compression::Gzip => {
                io::copy(&mut flate2::read::GzDecoder::new(&raw[..]), &mut out)
                    .map_err(|e| ModuleError(format!("{}: bad gzip data: {e}", path.display())))?;
            }
        }
        Ok(out.buf)
    }
}

/// The modules a firmware loads, dependencies first, plus the requested names that the kernel
/// has built in (nothing to load for those).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModulePlan {
    /// Modules to install and load, each after the ones it depends on.
    pub load_order: Vec<Module>,
    /// Requested names the kernel has built in.
    pub builtin: Vec<String>,
}

impl ModulePlan {
    /// A `modules.dep` covering exactly the planned modules, with installed (uncompressed) paths,
    /// so busybox `modprobe` works on the device as well as the generated load order.
    pub fn modules_dep(&self, deps: &DependencyIndex) -> String {
        let mut out = String::new();
        for m in &self.load_order {
            out.push_str(&m.installed_path());
            out.push(':');
            // modules.dep lists the full closure in the reverse of load order (modprobe loads
            // from the end), so walk the plan's order backwards.
            let closure = deps.closure_of(&m.name);
            for d in self.load_order.iter().rev() {
                if d.name != m.name && closure.contains(&d.name) {
                    out.push(' ');
                    out.push_str(&d.installed_path());
                }
            }
            out.push('\n');
        }
        out
    }
}

/// Canonical module name: file stem without `.ko[.xz|.gz]`, `-` folded to `_` (as the kernel does).
pub fn canonical_name(name_or_path: &str) -> String {
    let base = name_or_path.rsplit('/').next().unwrap_or(name_or_path);
    let stem = strip_module_suffix(base).unwrap_or(base);
    stem.replace('-', "_")
}

fn strip_module_suffix(file: &str) -> Option<&str> {
    file.strip_suffix(".ko")
        .or_else(|| file.strip_suffix(".ko.xz"))
        .or_else(|| file.strip_suffix(".ko.gz"))
}

fn compression_of(path: &str) -> Result<Compression, ModuleError> {
    if path.ends_with(".ko") {
        Ok(Compression::None)
    } else if path.ends_with(".ko.xz") {
        Ok(Compression::Xz)
    } else if path.ends_with(".ko.gz") {
        Ok(Compression::Gzip)
    } else {
        Err(ModuleError(format!(
            "module file {path:?}: unsupported kind (expected .ko, .ko.xz or .ko.gz)"
        )))
    }
}

/// Every module of one kernel's modules tree with its direct dependencies.
#[derive(Debug, Clone, Default)]
pub struct DependencyIndex {
    modules_dir: PathBuf,
    /// module name -> file path relative to `modules_dir`
    files: BTreeMap<String, String>,
    /// module name -> direct dependencies (filled lazily when read from `.modinfo`)
    deps: BTreeMap<String, Vec<String>>,
    builtin: BTreeSet<String>,
    /// True when `deps` came from modules.dep; otherwise they are read from .modinfo on demand.
    from_depfile: bool,
}

impl DependencyIndex {
    /// Indexes `modules_dir` (`lib/modules/<release>`).
    pub fn open(modules_dir: &Path) -> Result<Self, ModuleError> {
        if !modules_dir.is_dir() {
            return Err(ModuleError(format!(
                "kernel modules directory {} does not exist",
                modules_dir.display()
            )));
        }
        let mut index = DependencyIndex {
            modules_dir: modules_dir.to_path_buf(),
            ..Default::default()
        };
        let builtin_path = modules_dir.join("modules.builtin");
        if builtin_path.exists() {
            let text = read_text(&builtin_path)?;
            index.builtin = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(canonical_name)
                .collect();
        }
        let dep_path = modules_dir.join("modules.dep");
        if dep_path.exists() {
            index.from_depfile = true;
            let text = read_text(&dep_path)?;
            for (lineno, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let (module, deps) = line.split_once(':').ok_or_else(|| {
                    ModuleError(format!(
                        "{} line {}: expected 'module.ko: deps...'",
                        dep_path.display(),
                        lineno + 1
                    ))
                })?;
                let module = module.trim();
                compression_of(module)?;
                let name = canonical_name(module);
                index.files.insert(name.clone(), module.to_string());
                let deps = deps.split_whitespace().map(canonical_name).collect();
                index.deps.insert(name, deps);
            }
        } else {
            index.walk(modules_dir, "", 0)?;
        }
        Ok(index)
    }

    fn walk(&mut self, dir: &Path, rel: &str, depth: usize) -> Result<(), ModuleError> {
        if depth > MAX_WALK_DEPTH {
            return Err(ModuleError(format!(
                "{}: modules tree nested deeper than {MAX_WALK_DEPTH} levels",
                dir.display()
            )));
        }
        let mut entries: Vec<_> = fs::read_dir(dir)
            .map_err(|e| io_error(dir, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| io_error(dir, e))?;
        // Sorted so that a duplicate name resolves the same way on every machine.
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let Some(file) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let child_rel = if rel.is_empty() {
                file.clone()
            } else {
                format!("{rel}/{file}")
            };
            let kind = entry.file_type().map_err(|e| io_error(&entry.path(), e))?;
            if kind.is_dir() {
                self.walk(&entry.path(), &child_rel, depth + 1)?;
            } else if kind.is_file() && strip_module_suffix(&file).is_some() {
                self.files.entry(canonical_name(&file)).or_insert(child_rel);
            }
        }
        Ok(())
    }

    /// True when `name` is compiled into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&canonical_name(name))
    }

    fn direct_deps(&mut self, name: &str) -> Result<Vec<String>, ModuleError> {
        if let Some(d) = self.deps.get(name) {
            return Ok(d.clone());
        }
        let rel = self.files.get(name).cloned().ok_or_else(|| {
            ModuleError(format!(
                "module {name:?} is neither in {} nor built into the kernel",
                self.modules_dir.display()
            ))
        })?;
        let module = Module {
            name: name.to_string(),
            compression: compression_of(&rel)?,
            source_path: rel,
        };
        let elf = module.read_uncompressed(&self.modules_dir)?;
        let path = self.modules_dir.join(&module.source_path);
        let deps = modinfo_depends(&elf)
            .map_err(|why| ModuleError(format!("{}: {why}", path.display())))?;
        self.deps.insert(name.to_string(), deps.clone());
        Ok(deps)
    }

    /// Plans the loading of `names`: their dependency closure, dependencies first, each module
    /// once, in a deterministic order. Built-in modules are skipped and reported.
    pub fn plan(&mut self, names: &[String]) -> Result<ModulePlan, ModuleError> {
        let mut plan = ModulePlan::default();
        let mut done = BTreeSet::new();
        for requested in names {
            let name = canonical_name(requested);
            if name.is_empty() {
                return Err(ModuleError(format!("empty module name {requested:?}")));
            }
            if !self.files.contains_key(&name) && self.is_builtin(&name) {
                if !plan.builtin.contains(&name) {
                    plan.builtin.push(name);
                }
                continue;
            }
            let mut stack = Vec::new();
            self.visit(&name, &mut done, &mut stack, &mut plan.load_order)?;
        }
        Ok(plan)
    }

    fn visit(
        &mut self,
        name: &str,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
        order: &mut Vec<Module>,
    ) -> Result<(), ModuleError> {
        if done.contains(name) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            return Err(ModuleError(format!(
                "module dependency cycle: {} -> {name}",
                stack.join(" -> ")
            )));
        }
        // Dependencies may be built in on this kernel even though another kernel needs them.
        if !self.files.contains_key(name) && self.is_builtin(name) {
            done.insert(name.to_string());
            return Ok(());
        }
        stack.push(name.to_string());
        // modprobe loads a modules.dep list from its end; follow the same order.
        for dep in self.direct_deps(name)?.into_iter().rev() {
            self.visit(&dep, done, stack, order)?;
        }
        stack.pop();
        let source_path = self
            .files
            .get(name)
            .cloned()
            .ok_or_else(|| ModuleError(format!("module {name:?} has no file")))?;
        order.push(Module {
            name: name.to_string(),
            compression: compression_of(&source_path)?,
            source_path,
        });
        done.insert(name.to_string());
        Ok(())
    }

    /// `name` and everything it needs (only `name` itself if unknown).
    fn closure_of(&self, name: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![name.to_string()];
        while let Some(n) = todo.pop() {
            if let Some(deps) = self.deps.get(&n) {
                todo.extend(deps.iter().filter(|d| !seen.contains(*d)).cloned());
            }
            seen.insert(n);
        }
        seen
    }

    /// Whether dependencies were taken from `modules.dep` (else from each module's `.modinfo`).
    pub fn has_depfile(&self) -> bool {
        self.from_depfile
    }
}

fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ModuleError> {
    let file = fs::File::open(path).map_err(|e| io_error(path, e))?;
    let mut buf = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| io_error(path, e))?;
    if buf.len() as u64 > limit {
        return Err(ModuleError(format!(
            "{}: larger than the {limit}-byte limit",
            path.display()
        )));
    }
    Ok(buf)
}

fn read_text(path: &Path) -> Result<String, ModuleError> {
    String::from_utf8(read_bounded(path, MAX_INDEX_SIZE)?)
        .map_err(|_| ModuleError(format!("{}: not UTF-8 text", path.display())))
}

/// A `Write` sink that refuses to grow past a limit (bounds decompression output).
struct LimitedWriter {
    buf: Vec<u8>,
    limit: usize,
}

impl LimitedWriter {
    fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            limit,
        }
    }
}

impl Write for LimitedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("decompressed module exceeds {} bytes", self.limit),
            ));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads the `depends=` list from a module's `.modinfo` section (32/64-bit, either endianness).
pub fn modinfo_depends(elf: &[u8]) -> Result<Vec<String>, String> {
    let info = modinfo_section(elf)?;
    for field in info.split(|b| *b == 0) {
        if let Some(value) = field.strip_prefix(b"depends=") {
            let value = std::str::from_utf8(value).map_err(|_| "depends= is not UTF-8")?;
            return Ok(value
                .split(',')
                .filter(|d| !d.is_empty())
                .map(canonical_name)
                .collect());
        }
    }
    Ok(Vec::new())
}

fn modinfo_section(elf: &[u8]) -> Result<&[u8], String> {
    if elf.len() < 52 || &elf[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    let is64 = match elf[4] {
        1 => false,
        2 => true,
        c => return Err(format!("unknown ELF class {c}")),
    };
    let big = match elf[5] {
        1 => false,
        2 => true,
        d => return Err(format!("unknown ELF data encoding {d}")),
    };
    let rd = |off: usize, len: usize| -> Result<u64, String> {
        let b = elf
            .get(off..off + len)
            .ok_or_else(|| format!("ELF truncated at offset {off}"))?;
        let mut v = 0u64;
        if big {
            for x in b {
                v = (v << 8) | *x as u64;
            }
        } else {
            for x in b.iter().rev() {
                v = (v << 8) | *x as u64;
            }
        }
        Ok(v)
    };
    let word = if is64 { 8 } else { 4 };
    let (shoff, shentsize, shnum, shstrndx) = if is64 {
        (rd(0x28, 8)?, rd(0x3a, 2)?, rd(0x3c, 2)?, rd(0x3e, 2)?)
    } else {
        (rd(0x20, 4)?, rd(0x2e, 2)?, rd(0x30, 2)?, rd(0x32, 2)?)
    };
    let min_entsize = if is64 { 64 } else { 40 };
    if shentsize < min_entsize {
        return Err(format!("ELF section header size {shentsize} too small"));
    }
    let section = |i: u64| -> Result<(u64, u64, u64), String> {
        let base = shoff
            .checked_add(i.checked_mul(shentsize).ok_or("ELF overflow")?)
            .ok_or("ELF overflow")? as usize;
        let name = rd(base, 4)?;
        let (offset, size) = if is64 {
            (rd(base + 0x18, word)?, rd(base + 0x20, word)?)
        } else {
            (rd(base + 0x10, word)?, rd(base + 0x14, word)?)
        };
        Ok((name, offset, size))
    };
    let slice = |offset: u64, size: u64| -> Result<&[u8], String> {
        let end = offset.checked_add(size).ok_or("ELF overflow")?;
        elf.get(offset as usize..end as usize)
            .ok_or_else(|| format!("ELF section at {offset}+{size} lies outside the file"))
    };
    let (_, str_off, str_size) = section(shstrndx)?;
    let names = slice(str_off, str_size)?;
    for i in 0..shnum {
        let (name, offset, size) = section(i)?;
        let name = names
            .get(name as usize..)
            .and_then(|s| s.split(|b| *b == 0).next())
            .unwrap_or_default();
        if name == b".modinfo" {
            return slice(offset, size);
        }
    }
    Err("no .modinfo section (not a kernel module?)".into())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal 64-bit little-endian ELF relocatable with a `.modinfo` section, good enough for
    /// the parser (and for the firmware tests' synthetic modules trees).
    pub fn fake_module(name: &str, depends: &[&str]) -> Vec<u8> {
        let modinfo = format!("license=GPL\0depends={}\0name={name}\0", depends.join(","));
        let shstrtab = b"\0.modinfo\0.shstrtab\0";
        let data_off = 64usize;
        let str_off = data_off + modinfo.len();
        let sh_off = (str_off + shstrtab.len() + 7) & !7;
        let mut elf = vec![0u8; sh_off + 3 * 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2; // 64-bit
        elf[5] = 1; // little-endian
        elf[6] = 1;
        elf[0x10] = 1; // ET_REL
        elf[0x28..0x30].copy_from_slice(&(sh_off as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        elf[data_off..str_off].copy_from_slice(modinfo.as_bytes());
        elf[str_off..str_off + shstrtab.len()].copy_from_slice(shstrtab);
        let mut put_section = |i: usize, name: u32, off: usize, size: usize| {
            let b = sh_off + i * 64;
            elf[b..b + 4].copy_from_slice(&name.to_le_bytes());
            elf[b + 0x18..b + 0x20].copy_from_slice(&(off as u64).to_le_bytes());
            elf[b + 0x20..b + 0x28].copy_from_slice(&(size as u64).to_le_bytes());
        };
        put_section(1, 1, data_off, modinfo.len());
        put_section(2, 10, str_off, shstrtab.len());
        elf
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cpevisor-mod-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn put(dir: &Path, rel: &str, data: &[u8]) {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    fn names(plan: &ModulePlan) -> Vec<&str> {
        plan.load_order.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn closure_from_modules_dep_puts_dependencies_first() {
        let d = tmpdir("dep");
        put(
            &d,
            "modules.dep",
            b"kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko kernel/lib/crc16.ko\n\
              kernel/fs/jbd2/jbd2.ko:\n\
              kernel/fs/mbcache.ko:\n\
              kernel/lib/crc16.ko:\n\
              kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio-ring.ko\n\
              kernel/drivers/virtio/virtio-ring.ko:\n\
              kernel/drivers/net/virtio_net.ko.xz: kernel/net/core/failover.ko kernel/drivers/virtio/virtio-ring.ko\n\
              kernel/net/core/failover.ko:\n",
        );
        put(&d, "modules.builtin", b"kernel/drivers/virtio/virtio.ko\n");
        let mut index = DependencyIndex::open(&d).unwrap();
        assert!(index.has_depfile());
        let plan = index
            .plan(&[
                "virtio_blk".into(),
                "virtio".into(),
                "virtio-net".into(),
                "ext4".into(),
                "virtio_blk".into(),
            ])
            .unwrap();
        assert_eq!(
            names(&plan),
            [
                "virtio_ring",
                "virtio_blk",
                "failover",
                "virtio_net",
                "crc16",
                "mbcache",
                "jbd2",
                "ext4"
            ]
        );
        assert_eq!(plan.builtin, ["virtio"]);
        let net = &plan.load_order[3];
        assert_eq!(net.compression, Compression::Xz);
        assert_eq!(net.installed_path(), "kernel/drivers/net/virtio_net.ko");
        let dep = plan.modules_dep(&index);
        assert!(dep.contains(
            "kernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko kernel/drivers/virtio/virtio-ring.ko\n"
        ), "{dep}");
        assert!(
            dep.contains("kernel/drivers/virtio/virtio-ring.ko:\n"),
            "{dep}"
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn closure_from_modinfo_when_there_is_no_modules_dep() {
        let d = tmpdir("modinfo");
        put(&d, "kernel/a/leaf.ko", &fake_module("leaf", &[]));
        put(
            &d,
            "kernel/b/mid-dle.ko",
            &fake_module("mid_dle", &["leaf"]),
        );
        let top = fake_module("top", &["mid_dle", "leaf", "core"]);
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &top[..], &mut xz).unwrap();
        put(&d, "kernel/c/top.ko.xz", &xz);
        put(&d, "modules.builtin", b"kernel/core/core.ko\n");
        let mut index = DependencyIndex::open(&d).unwrap();
        assert!(!index.has_depfile());
        let plan = index.plan(&["top".into()]).unwrap();
        assert_eq!(names(&plan), ["leaf", "mid_dle", "top"]);
        assert_eq!(plan.load_order[1].source_path, "kernel/b/mid-dle.ko");
        // The compressed module decompresses back to the original ELF.
        assert_eq!(plan.load_order[2].read_uncompressed(&d).unwrap(), top);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn unknown_modules_and_cycles_are_named_in_errors() {
        let d = tmpdir("bad");
        put(
            &d,
            "modules.dep",
            b"kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n",
        );
        let mut index = DependencyIndex::open(&d).unwrap();
        let err = index.plan(&["nosuch".into()]).unwrap_err().to_string();
        assert!(err.contains("\"nosuch\""), "{err}");
        let err = index.plan(&["a".into()]).unwrap_err().to_string();
        assert!(
            err.contains("cycle") && err.contains("a -> b -> a"),
            "{err}"
        );
        put(&d, "modules.dep", b"this line has no colon\n");
        let err = DependencyIndex::open(&d).unwrap_err().to_string();
        assert!(err.contains("modules.dep line 1"), "{err}");
        let err = DependencyIndex::open(&d.join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn modinfo_parser_rejects_garbage() {
        assert!(
            modinfo_depends(b"not an elf at all, but long enough to have a header....").is_err()
        );
        let mut elf = fake_module("x", &["y"]);
        assert_eq!(modinfo_depends(&elf).unwrap(), ["y"]);
        // Point the section table past the end of the file.
        elf[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(modinfo_depends(&elf).is_err());
        assert_eq!(canonical_name("kernel/x/virtio-ring.ko.xz"), "virtio_ring");
    }
}
