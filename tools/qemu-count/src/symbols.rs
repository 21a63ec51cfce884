//! Function names for guest code that qemu's own lookup leaves unnamed. qemu-user 7.2 names only
//! `STT_FUNC` symbols of the main executable, so hand-written assembly kernels (tract's, typed
//! `STT_NOTYPE`) and every shared library (libc's `memcpy`, onnxruntime) come out as `?`. Here
//! the guest's code is found through the host address qemu gives each instruction: guest files
//! are mapped into qemu's own address space, so `/proc/self/maps` names the file and offset, the
//! file's program headers turn the offset into an ELF address, and its symbol tables (`.symtab`,
//! else `.dynsym`) into the nearest preceding symbol.

use std::collections::HashMap;
use std::path::PathBuf;

use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

/// Unsized symbols (assembly labels) are taken up to this far past their address.
const UNSIZED_REACH: u64 = 1 << 16;

struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    path: PathBuf,
}

struct Image {
    /// (file offset, ELF address, size) of each loadable segment.
    segments: Vec<(u64, u64, u64)>,
    /// (address, size, name), sorted by address.
    symbols: Vec<(u64, u64, String)>,
}

/// Resolves host addresses of guest code to symbol names, reading each file once.
pub struct Resolver {
    mappings: Vec<Mapping>,
    images: HashMap<PathBuf, Option<Image>>,
}

impl Resolver {
    /// From this process's current mappings (call it at exit, when every library is loaded).
    pub fn new() -> Self {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let mappings = maps.lines().filter_map(parse_mapping).collect();
        Resolver {
            mappings,
            images: HashMap::new(),
        }
    }

    /// The symbol containing the guest code at host address `haddr`; `[FILE]` for code of a file
    /// whose symbols do not cover it (a stripped library).
    pub fn name(&mut self, haddr: u64) -> Option<String> {
        let m = self
            .mappings
            .iter()
            .find(|m| (m.start..m.end).contains(&haddr))?;
        let file_offset = haddr - m.start + m.offset;
        let path = m.path.clone();
        let image = self
            .images
            .entry(path.clone())
            .or_insert_with(|| read_image(&path))
            .as_ref()?;
        let address = image
            .segments
            .iter()
            .find(|(off, _, size)| (*off..off + size).contains(&file_offset))
            .map(|(off, addr, _)| file_offset - off + addr)?;
        let i = image.symbols.partition_point(|(a, _, _)| *a <= address);
        let symbol = i.checked_sub(1).and_then(|i| image.symbols.get(i));
        match symbol {
            Some((start, size, name))
                if address - start < if *size > 0 { *size } else { UNSIZED_REACH } =>
            {
                Some(name.clone())
            }
            _ => Some(format!(
                "[{}]",
                path.file_name().map_or("?".into(), |n| n.to_string_lossy())
            )),
        }
    }
}

fn parse_mapping(line: &str) -> Option<Mapping> {
    let mut fields = line.split_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let _perms = fields.next()?;
    let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let (_dev, _inode) = (fields.next()?, fields.next()?);
    let path: String = fields.collect::<Vec<_>>().join(" ");
    if !path.starts_with('/') {
        return None;
    }
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset,
        path: PathBuf::from(path),
    })
}

fn read_image(path: &PathBuf) -> Option<Image> {
    let data = std::fs::read(path).ok()?;
    let file = object::File::parse(&*data).ok()?;
    let segments = file
        .segments()
        .map(|s| {
            let (offset, size) = s.file_range();
            (offset, s.address(), size)
        })
        .collect();
    let mut symbols: Vec<(u64, u64, String)> = file
        .symbols()
        .chain(file.dynamic_symbols())
        .filter(|s| s.address() != 0 && matches!(s.kind(), SymbolKind::Text | SymbolKind::Unknown))
        .filter(|s| s.section_index().is_some())
        .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_string())))
        .filter(|(_, _, name)| !name.is_empty() && !name.starts_with('$'))
        .collect();
    // Sized symbols first at one address, so a label at a function's start loses to the function.
    symbols.sort_by_key(|(a, size, _)| (*a, *size == 0));
    symbols.dedup_by_key(|(a, _, _)| *a);
    Some(Image { segments, symbols })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse() {
        let m =
            parse_mapping("5500000000-5500400000 r-xp 00001000 fe:01 123 /usr/lib/x y.so").unwrap();
        assert_eq!(
            (m.start, m.end, m.offset),
            (0x55_0000_0000, 0x55_0040_0000, 0x1000)
        );
        assert_eq!(m.path, PathBuf::from("/usr/lib/x y.so"));
        assert!(parse_mapping("7ffd0000-7ffd1000 rw-p 00000000 00:00 0 [stack]").is_none());
    }

    #[test]
    fn this_test_binary_resolves_its_own_functions() {
        // The test runs natively, so its own code is mapped like a guest's: a host address of
        // a function here must resolve to that function's symbol.
        #[inline(never)]
        fn marker_function_for_symbols() -> u32 {
            std::hint::black_box(7)
        }
        let address = marker_function_for_symbols as fn() -> u32 as usize as u64;
        let mut r = Resolver::new();
        let name = r.name(address + 2).expect("a symbol");
        assert!(name.contains("marker_function_for_symbols"), "{name}");
    }
}
