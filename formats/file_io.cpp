// Mapped files, bounds-checked reads and atomic writes.
#include "formats/file_io.h"

#include "core/encoding.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

namespace llmc {

namespace fs = std::filesystem;

namespace {

// Live read-only mappings (start -> size), so release_file_pages can tell mapped file bytes from
// heap memory, where MADV_DONTNEED would zero the data.
std::mutex& mappings_mutex() {
  static std::mutex m;
  return m;
}
std::map<uintptr_t, size_t>& mappings() {
  static std::map<uintptr_t, size_t> m;
  return m;
}

}  // namespace

void release_file_pages(const void* data, size_t size) {
  static const uintptr_t kPage = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<uintptr_t>(data);
  {
    std::lock_guard<std::mutex> lock(mappings_mutex());
    auto it = mappings().upper_bound(begin);
    if (it == mappings().begin()) return;
    --it;
    const uintptr_t offset = begin - it->first;                      // begin >= it->first: upper_bound's predecessor
    if (offset >= it->second || size > it->second - offset) return;  // not wholly inside that mapping
    // The page cache may map a large folio with one 2 MiB entry, which stays resident while any
    // part of it is mapped: a mapping whose pages are being given back maps 4 KiB pages from now on.
    ::madvise(reinterpret_cast<void*>(it->first), it->second, MADV_NOHUGEPAGE);
  }
  const uintptr_t first = (begin + kPage - 1) / kPage * kPage, last = (begin + size) / kPage * kPage;
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

bool is_file_backed(const void* data, size_t size) {
  const auto begin = reinterpret_cast<uintptr_t>(data);
  std::lock_guard<std::mutex> lock(mappings_mutex());
  auto it = mappings().upper_bound(begin);
  if (it == mappings().begin()) return false;
  --it;
  const uintptr_t offset = begin - it->first;
  return offset < it->second && size <= it->second - offset;
}

void release_file_pages(const Encoding& enc) {
  for_each_buffer(enc, [](const Bytes& b) { release_file_pages(b.data(), b.size()); });
}

size_t collapse_huge_pages(const void* data, size_t size) {
#ifdef __linux__
  constexpr int kMadvCollapse = 25;  // MADV_COLLAPSE (Linux 6.1; glibc 2.36's <sys/mman.h> lacks it)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const auto begin = reinterpret_cast<uintptr_t>(data), end = begin + size;
  if (size == 0) return 0;
  // The huge pages the range touches (small tensors share them with their heap neighbours, whose
  // bytes stay the same), else only those wholly inside it (the outer ones may reach unmapped memory).
  const uintptr_t outer_first = begin / kHuge * kHuge, outer_last = (end + kHuge - 1) / kHuge * kHuge;
  {
    std::lock_guard<std::mutex> lock(mappings_mutex());
    auto it = mappings().upper_bound(outer_first);
    if (it != mappings().begin() && std::prev(it)->first + std::prev(it)->second > outer_first) return 0;
    if (it != mappings().end() && it->first < outer_last) return 0;  // a mapped file's pages
  }
  const auto collapse = [&](uintptr_t first, uintptr_t last) -> size_t {
    if (last <= first) return 0;
    void* at = reinterpret_cast<void*>(first);
    return ::madvise(at, last - first, MADV_HUGEPAGE) == 0 && ::madvise(at, last - first, kMadvCollapse) == 0
               ? last - first
               : 0;
  };
  if (const size_t n = collapse(outer_first, outer_last)) return n;
  return collapse((begin + kHuge - 1) / kHuge * kHuge, end / kHuge * kHuge);
#else
  (void)data;
  (void)size;
  return 0;
#endif
}

Result<std::shared_ptr<MappedFile>> MappedFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return make_error(ErrorCode::kIo, path, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return make_error(ErrorCode::kIo, path, ": not a regular file");
  }
  std::shared_ptr<MappedFile> f(new MappedFile());
  f->path_ = path;
  f->size_ = static_cast<size_t>(st.st_size);
  if (f->size_ > 0) {
    void* p = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      return make_error(ErrorCode::kIo, path, ": mmap failed: ", std::strerror(errno));
    }
    f->data_ = static_cast<const uint8_t*>(p);
    std::lock_guard<std::mutex> lock(mappings_mutex());
    mappings()[reinterpret_cast<uintptr_t>(p)] = f->size_;
  }
  ::close(fd);
  return f;
}

MappedFile::~MappedFile() {
  if (!data_) return;
  {
    std::lock_guard<std::mutex> lock(mappings_mutex());
    mappings().erase(reinterpret_cast<uintptr_t>(data_));
  }
  ::munmap(const_cast<uint8_t*>(data_), size_);
}

Result<void> transfer_at(int fd, bool write, void* data, size_t size, uint64_t offset, std::string_view what) {
  auto* p = static_cast<uint8_t*>(data);
  for (size_t done = 0; done < size;) {
    const auto at = static_cast<off_t>(offset + done);
    const ssize_t n = write ? ::pwrite(fd, p + done, size - done, at) : ::pread(fd, p + done, size - done, at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      return make_error(ErrorCode::kIo, what, ": cannot ", write ? "write " : "read ", size >> 20,
                        " MiB: ", n < 0 ? std::strerror(errno) : "no progress");
    done += static_cast<size_t>(n);
  }
  return {};
}

Result<Bytes> map_file_range(int fd, uint64_t offset, size_t size, const std::string& what) {
  if (size == 0) return Bytes{};
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(offset));
  if (p == MAP_FAILED) return make_error(ErrorCode::kIo, what, ": mmap failed: ", std::strerror(errno));
  {
    std::lock_guard<std::mutex> lock(mappings_mutex());
    mappings()[reinterpret_cast<uintptr_t>(p)] = size;
  }
  std::shared_ptr<const void> unmap(p, [size](const void* q) {
    {
      std::lock_guard<std::mutex> lock(mappings_mutex());
      mappings().erase(reinterpret_cast<uintptr_t>(q));
    }
    ::munmap(const_cast<void*>(q), size);
  });
  return Bytes::view(std::move(unmap), static_cast<const uint8_t*>(p), size);
}

Bytes MappedFile::bytes(std::shared_ptr<const MappedFile> self, uint64_t offset, uint64_t size) const {
  LLMC_CHECK(offset <= size_ && size <= size_ - offset, "mapped range outside file");
  return Bytes::view(std::move(self), data_ + offset, size);
}

Error ByteReader::error(ErrorCode code, const std::string& what) const {
  return make_error(code, file_, ": at offset ", pos_, ": ", what);
}

Result<void> ByteReader::seek(uint64_t offset) {
  if (offset > size_)
    return error(ErrorCode::kFormat, str_cat("seek to ", offset, " past end of file (", size_, " bytes)"));
  pos_ = static_cast<size_t>(offset);
  return {};
}

Result<void> ByteReader::skip(uint64_t n) {
  if (n > remaining()) return error(ErrorCode::kFormat, str_cat("need ", n, " more bytes, file has ", remaining()));
  pos_ += static_cast<size_t>(n);
  return {};
}

Result<const uint8_t*> ByteReader::take(uint64_t n) {
  if (n > remaining())
    return error(ErrorCode::kFormat, str_cat("truncated: need ", n, " bytes, only ", remaining(), " left"));
  const uint8_t* p = data_ + pos_;
  pos_ += static_cast<size_t>(n);
  return p;
}

namespace {
template <class T>
Result<T> read_le(ByteReader& r) {
  LLMC_ASSIGN_OR_RETURN(const uint8_t* p, r.take(sizeof(T)));
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
}  // namespace

Result<uint8_t> ByteReader::u8() { return read_le<uint8_t>(*this); }
Result<uint16_t> ByteReader::u16() { return read_le<uint16_t>(*this); }
Result<uint32_t> ByteReader::u32() { return read_le<uint32_t>(*this); }
Result<int32_t> ByteReader::i32() { return read_le<int32_t>(*this); }
Result<uint64_t> ByteReader::u64() { return read_le<uint64_t>(*this); }
Result<int64_t> ByteReader::i64() { return read_le<int64_t>(*this); }
Result<float> ByteReader::f32() { return read_le<float>(*this); }
Result<double> ByteReader::f64() { return read_le<double>(*this); }

Result<std::string> ByteReader::string(uint64_t n) {
  LLMC_ASSIGN_OR_RETURN(const uint8_t* p, take(n));
  return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
}

Result<std::unique_ptr<AtomicOutput>> AtomicOutput::create(const std::string& path) {
  std::unique_ptr<AtomicOutput> out(new AtomicOutput());
  out->path_ = path;
  std::string tmpl = path + ".tmp-XXXXXX";
  const int fd = ::mkstemp(tmpl.data());
  if (fd < 0) return make_error(ErrorCode::kIo, path, ": cannot create temporary output: ", std::strerror(errno));
  out->tmp_path_ = tmpl;
  out->file_ = ::fdopen(fd, "wb");
  if (!out->file_) {
    ::close(fd);
    ::unlink(tmpl.c_str());
    return make_error(ErrorCode::kIo, path, ": fdopen failed");
  }
  return out;
}

AtomicOutput::~AtomicOutput() {
  if (file_) std::fclose(file_);
  if (!committed_ && !tmp_path_.empty()) ::unlink(tmp_path_.c_str());
}

Result<void> AtomicOutput::write(const void* data, size_t size) {
  if (size == 0) return {};
  if (std::fwrite(data, 1, size, file_) != size)
    return make_error(ErrorCode::kIo, path_, ": write failed at offset ", pos_, ": ", std::strerror(errno));
  pos_ += size;
  if (pos_ - writeback_from_ >= kWritebackChunk) start_writeback();
  return {};
}

void AtomicOutput::start_writeback() {
#ifdef SYNC_FILE_RANGE_WRITE
  // Only a hint (commit's fsync reports errors): the disk writes the bytes so far while the caller
  // codes the next ones, instead of all of them at the end.
  if (std::fflush(file_) == 0)
    ::sync_file_range(::fileno(file_), static_cast<off_t>(writeback_from_), static_cast<off_t>(pos_ - writeback_from_),
                      SYNC_FILE_RANGE_WRITE);
#endif
  writeback_from_ = pos_;
}

Result<void> AtomicOutput::write_zeros(size_t size) {
  static const uint8_t kZeros[4096] = {};
  while (size > 0) {
    const size_t n = size < sizeof(kZeros) ? size : sizeof(kZeros);
    LLMC_TRY(write(kZeros, n));
    size -= n;
  }
  return {};
}

Result<void> AtomicOutput::pad_to(uint64_t alignment) {
  const uint64_t rem = pos_ % alignment;
  return rem == 0 ? Result<void>() : write_zeros(static_cast<size_t>(alignment - rem));
}

Result<void> AtomicOutput::write_at(uint64_t offset, const void* data, size_t size) {
  if (offset > pos_ || size > pos_ - offset)
    return make_error(ErrorCode::kInternal, path_, ": write_at past the written bytes");
  if (std::fflush(file_) != 0)
    return make_error(ErrorCode::kIo, path_, ": write failed at offset ", pos_, ": ", std::strerror(errno));
  const auto* p = static_cast<const uint8_t*>(data);
  while (size > 0) {
    const ssize_t n = ::pwrite(::fileno(file_), p, size, static_cast<off_t>(offset));
    if (n <= 0)
      return make_error(ErrorCode::kIo, path_, ": write failed at offset ", offset, ": ", std::strerror(errno));
    p += n;
    offset += static_cast<uint64_t>(n);
    size -= static_cast<size_t>(n);
  }
  return {};
}

Result<void> AtomicOutput::commit() {
  if (std::fflush(file_) != 0 || ::fsync(::fileno(file_)) != 0)
    return make_error(ErrorCode::kIo, path_, ": flush failed: ", std::strerror(errno));
  const int rc = std::fclose(file_);
  file_ = nullptr;
  if (rc != 0) return make_error(ErrorCode::kIo, path_, ": close failed: ", std::strerror(errno));
  if (::chmod(tmp_path_.c_str(), 0644) != 0 || std::rename(tmp_path_.c_str(), path_.c_str()) != 0)
    return make_error(ErrorCode::kIo, path_, ": rename failed: ", std::strerror(errno));
  committed_ = true;
  return {};
}

Result<void> check_output_path(const std::string& out, const std::vector<std::string>& inputs, bool force) {
  std::error_code ec;
  const bool exists = fs::exists(out, ec);
  for (const auto& in : inputs) {
    std::error_code ec2;
    if (exists && fs::equivalent(out, in, ec2))
      return make_error(ErrorCode::kExists, out, ": output is the same file as input ", in,
                        "; refusing to overwrite an input");
    // A directory input (Hugging Face folder) must not contain the output either.
    if (fs::is_directory(in, ec2) &&
        fs::weakly_canonical(fs::path(out), ec2).parent_path() == fs::weakly_canonical(in, ec2) && exists)
      return make_error(ErrorCode::kExists, out, ": output lies inside input folder ", in);
  }
  if (exists && !force) return make_error(ErrorCode::kExists, out, ": already exists (use --force to replace it)");
  if (exists && fs::is_directory(out, ec) && !force) return make_error(ErrorCode::kExists, out, ": is a directory");
  return {};
}

Result<std::string> read_text_file(const std::string& path, size_t max_bytes) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) return make_error(ErrorCode::kIo, path, ": cannot read: ", ec.message());
  if (size > max_bytes) return make_error(ErrorCode::kFormat, path, ": file too large (", size, " bytes)");
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(ErrorCode::kIo, path, ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace llmc

#include <xxhash.h>

#include <algorithm>

namespace llmc {

Result<uint64_t> hash_path(const std::string& path) {
  std::error_code ec;
  std::vector<std::string> files;
  if (fs::is_directory(path, ec)) {
    for (const auto& e : fs::recursive_directory_iterator(path, ec))
      if (e.is_regular_file(ec)) files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(path);
  }
  // Read in chunks rather than mapped: hashing a multi-GB input must not add it to the RSS.
  XXH64_state_t* state = XXH64_createState();
  XXH64_reset(state, 0);
  std::vector<char> buf(size_t{1} << 20);
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    while (in) {
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      XXH64_update(state, buf.data(), static_cast<size_t>(in.gcount()));
    }
    if (in.bad() || !in.eof()) {
      XXH64_freeState(state);
      return make_error(ErrorCode::kIo, f, ": cannot read");
    }
  }
  const uint64_t h = XXH64_digest(state);
  XXH64_freeState(state);
  return h;
}

uint64_t path_size(const std::string& path) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) {
    const auto n = fs::file_size(path, ec);
    return ec ? 0 : n;
  }
  uint64_t total = 0;
  for (const auto& e : fs::recursive_directory_iterator(path, ec))
    if (e.is_regular_file(ec)) total += e.file_size(ec);
  return total;
}

}  // namespace llmc
