// Unlinked temporary files: the calibration spill file and the scratch file of built tensors.
#include "formats/scratch_file.h"

#include <fcntl.h>
#include <malloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "core/log.h"
#include "formats/file_io.h"

namespace llmc {

std::string temp_dir() {
  const char* env = std::getenv("TMPDIR");
  return env && *env ? env : "/tmp";
}

Result<int> open_unlinked(const std::string& dir, const std::string& what) {
#ifdef O_TMPFILE
  const int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0) return fd;
  if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
    return make_error(ErrorCode::kIo, what, ": cannot create a temporary file in ", dir, ": ", std::strerror(errno));
#endif
  std::string path = dir + "/llmc-XXXXXX";
  const int tmp = ::mkstemp(path.data());
  if (tmp < 0)
    return make_error(ErrorCode::kIo, what, ": cannot create a temporary file in ", dir, ": ", std::strerror(errno));
  ::unlink(path.c_str());
  return tmp;
}

Result<std::shared_ptr<ScratchFile>> ScratchFile::create(const std::string& dir) {
  std::shared_ptr<ScratchFile> f(new ScratchFile());
  f->dir_ = dir;
  LLMC_ASSIGN_OR_RETURN(const int fd, open_unlinked(dir, "scratch file"));
  f->fd_ = std::shared_ptr<const int>(new int(fd), [](const int* p) {
    ::close(*p);
    delete p;
  });
  return f;
}

ScratchFile::~ScratchFile() = default;  // the views keep the file open

uint64_t ScratchFile::disk_bytes() const {
  struct stat st {};
  return ::fstat(*fd_, &st) == 0 ? static_cast<uint64_t>(st.st_blocks) * 512 : 0;
}

uint64_t ScratchFile::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return end_;
}

ScratchFile::Range ScratchFile::reserve(uint64_t size) {
  static const uint64_t kPage = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  std::lock_guard<std::mutex> lock(mutex_);
  const Range r{end_, size};
  end_ = (end_ + size + kPage - 1) / kPage * kPage;
  return r;
}

Result<void> ScratchFile::write(const Range& range, uint64_t offset, std::span<const uint8_t> bytes) {
  LLMC_CHECK(offset <= range.size && bytes.size() <= range.size - offset, "scratch write outside its range");
  auto r = transfer_at(*fd_, true, const_cast<uint8_t*>(bytes.data()), bytes.size(), range.at + offset,
                       "scratch file in " + dir_);
  if (!r.ok()) return make_error(ErrorCode::kIo, r.error().message, "; free disk space or point TMPDIR elsewhere");
  return {};
}

Result<Bytes> ScratchFile::view(const Range& range) {
  LLMC_ASSIGN_OR_RETURN(Bytes mapped, map_file_range(*fd_, range.at, range.size, "scratch file in " + dir_));
  if (mapped.empty()) return mapped;
  // When the last view of the range goes, so do its blocks on disk (the file is append-only, and a
  // pass that replaces tensors several times would otherwise grow it with each copy).
  class Region {
   public:
    Region(Bytes mapping, std::shared_ptr<const int> fd, uint64_t at, uint64_t size)
        : mapping_(std::move(mapping)), fd_(std::move(fd)), at_(at), size_(size) {}
    Region(const Region&) = delete;
    Region& operator=(const Region&) = delete;
    ~Region() {
      mapping_ = Bytes{};  // unmapped first
#ifdef FALLOC_FL_PUNCH_HOLE
      ::fallocate(*fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(at_), static_cast<off_t>(size_));
#endif
    }

   private:
    Bytes mapping_;
    std::shared_ptr<const int> fd_;
    uint64_t at_, size_;
  };
  const uint8_t* data = mapped.data();
  const size_t size = mapped.size();
  auto region = std::make_shared<const Region>(std::move(mapped), fd_, range.at, range.size);
  return Bytes::view(std::move(region), data, size);
}

// Ranges are never reused: a failed write leaves a hole that no view maps.
Result<Bytes> ScratchFile::store(std::span<const uint8_t> bytes) {
  if (bytes.empty()) return Bytes{};
  const Range r = reserve(bytes.size());
  LLMC_TRY(write(r, 0, bytes));
  return view(r);
}

Result<EncodingPtr> ScratchFile::store(const Encoding& enc) {
  return map_buffers(enc, [this](const Bytes& b) -> Result<Bytes> {
    if (is_file_backed(b.data(), b.size())) return b;  // already costs no heap
    return store(b.span());
  });
}

EncodingPtr store_or_keep(ScratchFile* scratch, const EncodingPtr& enc) {
  if (!scratch || !enc) return enc;
  auto stored = scratch->store(*enc);
  if (stored.ok()) return std::move(stored).value();
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true)) log_warn(stored.error().message, "; tensors stay in memory");
  return enc;
}

void trim_heap() { ::malloc_trim(0); }

}  // namespace llmc
