"""Imported images: OCI layouts and `docker save` tarballs -> root directories for --rootfs.

Layout under nsbox's state directory (hidden in every sandbox):
  images/layers/<sha256>/        one layer's files, extracted once, shared by every image
  images/layers/<sha256>.json    its whiteouts and opaque directories (never materialized)
  images/roots/<chain>/          the layers applied in order (hard links into the layers),
                                 one per distinct layer chain, shared by every name
  images/refs/<name>.json        a name: its chain, its layers and its OCI config

Extraction trusts nothing in a tarball: every member is checked before anything is
written (a plain relative path, a regular file, directory, symlink or hard link to
an earlier member of the same layer), every write goes through directory
descriptors opened with O_NOFOLLOW (a symlink is created, never followed), and the
total size is bounded. Ownership is not kept (everything belongs to the importing
user, uid 0 inside with --root-inside); setuid and setgid bits are dropped.
"""

import errno
import hashlib
import json
import os
import stat
import tarfile

from nsbox.errors import PolicyError

IMAGES = "images"
MAX_TOTAL = 32 << 30  # bytes of files in one import, all layers together
MAX_MEMBERS = 2_000_000
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-:")


class ImageError(PolicyError):
    """A source that cannot be imported, or an unknown name; says which and why."""


# --- names and the store ---------------------------------------------------------------

def store(state_dir: str) -> str:
    return os.path.join(state_dir, IMAGES)


def check_name(name: str) -> str:
    if not name or len(name) > 128 or name[0] in ".-" or not set(name.lower()) <= _NAME_CHARS:
        raise ImageError(f"image name {name!r}: use letters, digits and . _ - : (at most "
                         "128, not starting with . or -)")
    return name


def _ref_path(state_dir: str, name: str) -> str:
    return os.path.join(store(state_dir), "refs", check_name(name).replace(":", "%3A") + ".json")


def lookup(state_dir: str, name: str) -> dict:
    """A name's record: {"name", "root" (the directory), "config" (the OCI config or {}),
    "layers", "chain", "source"}; ImageError if there is no such image."""
    try:
        with open(_ref_path(state_dir, name)) as f:
            ref = json.load(f)
    except FileNotFoundError:
        raise ImageError(f"no image named {name!r}; 'nsbox image list' shows the imported "
                         "ones, 'nsbox image import SOURCE NAME' adds one") from None
    ref["root"] = os.path.join(store(state_dir), "roots", ref["chain"])
    return ref


def find(name: str) -> dict:
    """lookup() in this user's state directory."""
    from nsbox import state

    return lookup(state.ensure_state_dir(), name)


def listing(state_dir: str) -> list:
    """Every image's record, by name."""
    refs = os.path.join(store(state_dir), "refs")
    try:
        names = sorted(os.listdir(refs))
    except FileNotFoundError:
        return []
    out = []
    for entry in names:
        if entry.endswith(".json") and not entry.startswith("."):
            try:
                out.append(lookup(state_dir, entry[:-5].replace("%3A", ":")))
            except (ImageError, OSError, ValueError, KeyError):
                continue
    return out


def remove(state_dir: str, name: str) -> None:
    """Forget a name; then remove the roots and layers no image uses any more."""
    lookup(state_dir, name)
    os.unlink(_ref_path(state_dir, name))
    collect_garbage(state_dir)


def _locked(state_dir: str, exclusive: bool) -> int:
    """A lock on the store: imports hold it shared from their first layer to their name,
    garbage collection exclusively, so it never takes what an import is building."""
    import fcntl

    os.makedirs(store(state_dir), mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(store(state_dir), ".lock"),
                 os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
    return fd


def collect_garbage(state_dir: str) -> None:
    lock = _locked(state_dir, exclusive=True)
    try:
        _collect(state_dir)
    finally:
        os.close(lock)


def _collect(state_dir: str) -> None:
    used = listing(state_dir)
    chains = {r["chain"] for r in used}
    layers = {d for r in used for d in r["layers"]}
    for kind, keep in (("roots", chains), ("layers", layers)):
        top = os.path.join(store(state_dir), kind)
        try:
            names = os.listdir(top)
        except FileNotFoundError:
            continue
        fd = os.open(top, _DIR)
        try:
            for entry in names:
                if entry.startswith("."):
                    continue  # an import under way, or the lock
                if entry.partition(".json")[0] not in keep:
                    _remove_tree(fd, entry)
        finally:
            os.close(fd)


# --- import --------------------------------------------------------------------------

def import_image(state_dir: str, source: str, name: str, max_total: int = MAX_TOTAL,
                 progress=None) -> dict:
    """Import `source` (an OCI image layout directory or tarball, or a `docker save`
    tarball) as `name`; returns its record. ImageError names what is wrong."""
    check_name(name)
    budget = _Budget(max_total)
    lock = _locked(state_dir, exclusive=False)
    try:
        with _Source(source) as src:
            config, blobs = src.image()
            digests = []
            for blob in blobs:
                digest = _hash(src, blob)
                if progress is not None:
                    progress(f"layer {digest[:12]}")
                _ensure_layer(state_dir, src, blob, digest, budget)
                digests.append(digest)
        chain = _chain(digests)
        _ensure_root(state_dir, chain, digests)
        ref = {"name": name, "chain": chain, "layers": digests, "config": config,
               "source": os.path.abspath(source)}
        path = _ref_path(state_dir, name)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.urandom(4).hex()}.tmp"
        with open(tmp, "w") as f:
            json.dump(ref, f, indent=1)
        os.rename(tmp, path)
    finally:
        os.close(lock)
    collect_garbage(state_dir)  # a name imported again may leave its old root unused
    return lookup(state_dir, name)


def _chain(digests: list) -> str:
    chain = ""
    for digest in digests:
        chain = hashlib.sha256(f"{chain} {digest}".encode()).hexdigest() if chain else digest
    return chain or hashlib.sha256(b"").hexdigest()


def _hash(src, blob) -> str:
    digest = hashlib.sha256()
    with src.open(blob) as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    found = digest.hexdigest()
    if blob.digest and blob.digest != found:
        raise ImageError(f"layer {blob.path}: its content's sha256 is {found}, not the "
                         f"{blob.digest} its manifest names; the source is damaged")
    return found


class _Budget:
    def __init__(self, limit: int):
        self.limit, self.used, self.members = limit, 0, 0

    def take(self, size: int, what: str) -> None:
        self.used += size
        self.members += 1
        if self.used > self.limit:
            raise ImageError(f"{what}: the image's files exceed {self.limit} bytes in all; "
                             "refusing it (a hostile or damaged tarball?)")
        if self.members > MAX_MEMBERS:
            raise ImageError(f"{what}: more than {MAX_MEMBERS} entries; refusing the image")


class _Blob:
    def __init__(self, path: str, digest: str = ""):
        self.path, self.digest = path, digest


class _Source:
    """An OCI image layout (directory or tarball) or a `docker save` tarball."""

    def __init__(self, path: str):
        self.path = path
        self.tar = None

    def __enter__(self):
        if os.path.isdir(self.path):
            return self
        if not os.path.isfile(self.path):
            raise ImageError(f"{self.path!r} does not exist: give an OCI image layout "
                             "directory or tarball, or a 'docker save' tarball")
        try:
            self.tar = tarfile.open(self.path, "r:*")
        except (tarfile.TarError, OSError) as err:
            raise ImageError(f"{self.path!r} is not a tar archive ({err})") from None
        self.members = {_clean(m.name): m for m in self.tar.getmembers() if m.isfile()}
        return self

    def __exit__(self, *exc):
        if self.tar is not None:
            self.tar.close()

    def has(self, rel: str) -> bool:
        if self.tar is None:
            return os.path.isfile(os.path.join(self.path, rel))
        return rel in self.members

    def open(self, blob_or_rel):
        rel = blob_or_rel.path if isinstance(blob_or_rel, _Blob) else blob_or_rel
        if ".." in rel.split("/") or rel.startswith("/"):
            raise ImageError(f"the image names a file outside itself: {rel!r}")
        if self.tar is None:
            try:
                return open(os.path.join(self.path, rel), "rb")
            except FileNotFoundError:
                raise ImageError(f"{self.path}: {rel} is missing") from None
        member = self.members.get(rel)
        if member is None:
            raise ImageError(f"{self.path}: {rel} is missing from the archive")
        return self.tar.extractfile(member)

    def json(self, rel: str):
        with self.open(rel) as f:
            data = f.read(16 << 20)
        try:
            return json.loads(data)
        except ValueError as err:
            raise ImageError(f"{self.path}: {rel} is not valid JSON ({err})") from None

    def image(self) -> tuple:
        """(the OCI config, the layer blobs in order)."""
        if self.has("manifest.json"):  # docker save (also written alongside an OCI index)
            entries = self.json("manifest.json")
            if not isinstance(entries, list) or len(entries) != 1:
                raise ImageError(f"{self.path}: manifest.json lists {len(entries)} images; "
                                 "save one image per tarball")
            entry = entries[0]
            return self.json(entry["Config"]), [_Blob(_clean(p), _digest_of_path(p))
                                                for p in entry["Layers"]]
        if self.has("index.json"):
            index = self.json("index.json")
            manifests = index.get("manifests") or []
            if len(manifests) != 1:
                raise ImageError(f"{self.path}: index.json lists {len(manifests)} manifests; "
                                 "export one image (one platform) per layout")
            manifest = self._blob_json(manifests[0])
            if "manifests" in manifest:  # an index for several platforms
                raise ImageError(f"{self.path}: a multi-platform index; copy one platform "
                                 "(e.g. skopeo copy --override-arch amd64) first")
            layers = []
            for layer in manifest.get("layers", []):
                media = layer.get("mediaType", "")
                if "zstd" in media:
                    raise ImageError(f"{self.path}: layer {layer.get('digest')} is zstd-"
                                     "compressed, which this import cannot read; convert it "
                                     "(skopeo copy --dest-compress-format gzip)")
                layers.append(_blob_for(layer))
            return self._blob_json(manifest["config"]), layers
        raise ImageError(f"{self.path}: neither an OCI image layout (index.json) nor a "
                         "'docker save' tarball (manifest.json)")

    def _blob_json(self, descriptor: dict):
        blob = _blob_for(descriptor)
        with self.open(blob) as f:
            data = f.read(16 << 20)
        if blob.digest and hashlib.sha256(data).hexdigest() != blob.digest:
            raise ImageError(f"{self.path}: {blob.path} does not match its digest")
        return json.loads(data)


def _blob_for(descriptor: dict) -> _Blob:
    digest = str(descriptor.get("digest", ""))
    algorithm, _, value = digest.partition(":")
    if algorithm != "sha256" or len(value) != 64 or not set(value) <= set("0123456789abcdef"):
        raise ImageError(f"unsupported digest {digest!r} (sha256 only)")
    return _Blob(f"blobs/sha256/{value}", value)


def _digest_of_path(path: str) -> str:
    # Newer `docker save` names layers blobs/sha256/<digest>: check them against it.
    parts = path.split("/")
    if len(parts) == 3 and parts[:2] == ["blobs", "sha256"] and len(parts[2]) == 64:
        return parts[2]
    return ""


def _clean(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


# --- one layer -------------------------------------------------------------------------

def _ensure_layer(state_dir: str, src, blob, digest: str, budget: _Budget) -> None:
    top = os.path.join(store(state_dir), "layers")
    final = os.path.join(top, digest)
    if os.path.isdir(final) and os.path.isfile(final + ".json"):
        return  # shared with an image imported before

    def extract(layer_fd: int) -> dict:
        with src.open(blob) as f:
            try:
                with tarfile.open(fileobj=f, mode="r:*") as layer:
                    return extract_layer(layer, layer_fd, budget, digest[:12])
            except tarfile.TarError as err:
                raise ImageError(f"layer {digest[:12]}: not a readable tar archive "
                                 f"({err})") from None

    _build(top, digest, 0o700, extract)


def _build(top: str, name: str, mode: int, fill) -> None:
    """Make directory `name` (`mode`) below `top` whole or not at all: fill(dir_fd) fills
    it under a temporary name, then it is renamed into place, with what fill returns,
    unless None, beside it as `name`.json. One another import made first is kept."""
    os.makedirs(top, mode=0o700, exist_ok=True)
    tmp = f".tmp-{name[:12]}-{os.urandom(4).hex()}"
    top_fd = os.open(top, _DIR)
    try:
        os.mkdir(tmp, mode, dir_fd=top_fd)
        try:
            fd = os.open(tmp, _DIR, dir_fd=top_fd)
            try:
                sidecar = fill(fd)
            finally:
                os.close(fd)
            if sidecar is not None:
                _write_json(top_fd, f"{tmp}.json", sidecar)
            try:
                os.rename(tmp, name, src_dir_fd=top_fd, dst_dir_fd=top_fd)
            except OSError as err:
                if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                _remove_tree(top_fd, tmp)  # another import made it first
            if sidecar is not None:
                os.rename(f"{tmp}.json", f"{name}.json", src_dir_fd=top_fd, dst_dir_fd=top_fd)
        except BaseException:
            for leftover in (tmp, f"{tmp}.json"):
                try:
                    _remove_tree(top_fd, leftover)
                except FileNotFoundError:
                    pass
            raise
    finally:
        os.close(top_fd)


def extract_layer(layer: tarfile.TarFile, root_fd: int, budget: _Budget, what: str) -> dict:
    """Extract one layer below `root_fd`; returns {"whiteouts": [...], "opaque": [...]}.
    Every member is checked first (check_member); ImageError on the first bad one."""
    whiteouts, opaque = [], []
    for member in layer:
        path = check_member(member, what)
        if path is None:
            continue  # the layer's root directory itself
        parent_rel, _, name = path.rpartition("/")
        if name == OPAQUE:
            opaque.append(parent_rel)
            continue
        if name.startswith(WHITEOUT):
            whiteouts.append(f"{parent_rel}/{name[len(WHITEOUT):]}".lstrip("/"))
            continue
        budget.take(member.size if member.isfile() else 0, f"layer {what}: {member.name}")
        def beneath_a_link(part):
            return ImageError(f"layer {what}: {member.name!r} lies beneath {part!r}, which is "
                              "a symlink or a file in the layer; refusing to write through it")

        parent = _open_dirs(root_fd, parent_rel, beneath_a_link, make_missing=True)
        try:
            _write_member(layer, member, parent, name, root_fd, what)
        finally:
            os.close(parent)
    return {"whiteouts": whiteouts, "opaque": opaque}


def check_member(member: tarfile.TarInfo, what: str):
    """The member's plain relative path (None for the root itself); ImageError for an
    absolute path, a `..`, a device node or other special file, or a bad hard link."""
    name = member.name
    where = f"layer {what}: {name!r}"
    if name.startswith("/"):
        raise ImageError(f"{where} is an absolute path; refusing the image")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(f"{where} climbs out of the image with '..'; refusing the image")
    if "\0" in name:
        raise ImageError(f"{where} has a NUL byte in its name; refusing the image")
    if member.ischr() or member.isblk():
        raise ImageError(f"{where} is a device node; refusing the image (nsbox never "
                         "creates device nodes from an image)")
    if member.isfifo() or not (member.isfile() or member.isdir() or member.issym()
                               or member.islnk()):
        raise ImageError(f"{where} is a special file (type {member.type!r}); refusing the image")
    if member.islnk():
        target = member.linkname
        target_parts = [p for p in target.split("/") if p not in ("", ".")]
        if target.startswith("/") or ".." in target_parts or not target_parts:
            raise ImageError(f"{where} is a hard link to {target!r}, outside the layer; "
                             "refusing the image")
    return "/".join(parts) or None


def _open_dirs(root_fd: int, rel: str, refuse, make_missing: bool) -> int:
    """An fd of directory `rel` below root_fd, never through a symlink; a missing part
    is made when `make_missing`. refuse(part) is the ImageError for a part that cannot
    be passed (a symlink or a file; or missing, when nothing is made)."""
    fd = os.dup(root_fd)
    try:
        for part in [p for p in rel.split("/") if p]:
            try:
                nxt = os.open(part, _DIR, dir_fd=fd)
            except FileNotFoundError:
                if not make_missing:
                    raise refuse(part) from None
                os.mkdir(part, 0o755, dir_fd=fd)
                nxt = os.open(part, _DIR, dir_fd=fd)
            except OSError as err:
                if make_missing and err.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                raise refuse(part) from None
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def _write_member(layer, member, parent: int, name: str, root_fd: int, what: str) -> None:
    _clear(parent, name, keep_dir=member.isdir())
    mode = member.mode & 0o1777  # never setuid or setgid
    if member.isdir():
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
        except FileExistsError:
            pass
        os.chmod(name, mode | 0o700, dir_fd=parent, follow_symlinks=False)
    elif member.issym():
        os.symlink(member.linkname, name, dir_fd=parent)
    elif member.islnk():
        source_rel = "/".join(p for p in member.linkname.split("/") if p not in ("", "."))
        source_parent_rel, _, source_name = source_rel.rpartition("/")
        not_earlier = ImageError(
            f"layer {what}: {member.name!r} is a hard link to {member.linkname!r}, which is "
            "not an earlier entry of this layer (links across layers, or through a symlink, "
            "are refused)")
        source_parent = _open_dirs(root_fd, source_parent_rel, lambda _: not_earlier,
                                   make_missing=False)
        try:
            os.link(source_name, name, src_dir_fd=source_parent, dst_dir_fd=parent,
                    follow_symlinks=False)
        except FileNotFoundError:
            raise ImageError(f"layer {what}: {member.name!r} is a hard link to "
                             f"{member.linkname!r}, which is not an earlier entry of this "
                             "layer (links across layers are refused)") from None
        finally:
            os.close(source_parent)
    else:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=parent)
        try:
            data = layer.extractfile(member)
            left = member.size
            while left > 0:
                chunk = data.read(min(left, 1 << 20))
                if not chunk:
                    raise ImageError(f"layer {what}: {member.name!r} is cut short")
                os.write(fd, chunk)
                left -= len(chunk)
            os.fchmod(fd, mode)
            os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)


def _clear(parent: int, name: str, keep_dir: bool) -> None:
    """Make room for `name` (a later member replaces an earlier one of the same path)."""
    try:
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if keep_dir and stat.S_ISDIR(info.st_mode):
        return
    _remove_tree(parent, name)


# --- a root: the layers applied in order -----------------------------------------------

def _ensure_root(state_dir: str, chain: str, digests: list) -> None:
    top = os.path.join(store(state_dir), "roots")
    if os.path.isdir(os.path.join(top, chain)):
        return
    layers = os.path.join(store(state_dir), "layers")

    def apply_all(root_fd: int) -> None:
        for digest in digests:
            with open(os.path.join(layers, digest + ".json")) as f:
                marks = json.load(f)
            layer_fd = os.open(os.path.join(layers, digest), _DIR)
            try:
                apply_layer(root_fd, layer_fd, marks)
            finally:
                os.close(layer_fd)

    _build(top, chain, 0o755, apply_all)


def apply_layer(root_fd: int, layer_fd: int, marks: dict) -> None:
    """Apply one extracted layer onto the root: its whiteouts and opaque directories
    remove what the layers below put there, then its entries are hard-linked in."""
    for rel in marks.get("opaque", ()):
        fd = _existing_dir(root_fd, rel)
        if fd is not None:
            try:
                for name in os.listdir(fd):
                    _remove_tree(fd, name)
            finally:
                os.close(fd)
    for rel in marks.get("whiteouts", ()):
        parent_rel, _, name = rel.rpartition("/")
        fd = _existing_dir(root_fd, parent_rel)
        if fd is not None:
            try:
                _remove_tree(fd, name)
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)
    _merge(root_fd, layer_fd)


def _merge(root_fd: int, layer_fd: int) -> None:
    for name in os.listdir(layer_fd):
        info = os.stat(name, dir_fd=layer_fd, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            _clear(root_fd, name, keep_dir=True)
            try:
                os.mkdir(name, 0o700, dir_fd=root_fd)
            except FileExistsError:
                pass
            os.chmod(name, stat.S_IMODE(info.st_mode), dir_fd=root_fd, follow_symlinks=False)
            child_root = os.open(name, _DIR, dir_fd=root_fd)
            child_layer = os.open(name, _DIR, dir_fd=layer_fd)
            try:
                _merge(child_root, child_layer)
            finally:
                os.close(child_root)
                os.close(child_layer)
        else:
            _clear(root_fd, name, keep_dir=False)
            os.link(name, name, src_dir_fd=layer_fd, dst_dir_fd=root_fd, follow_symlinks=False)


def _existing_dir(root_fd: int, rel: str):
    """An fd of directory `rel` below root_fd through real directories only, or None."""
    fd = os.dup(root_fd)
    for part in [p for p in rel.split("/") if p]:
        try:
            nxt = os.open(part, _DIR, dir_fd=fd)
        except OSError:
            os.close(fd)
            return None
        os.close(fd)
        fd = nxt
    return fd


def _remove_tree(parent_fd: int, name: str) -> None:
    from nsbox.plan import container

    container.remove_tree(parent_fd, name)


def _write_json(dir_fd: int, name: str, data) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=dir_fd)
    with open(fd, "w") as f:
        json.dump(data, f)
