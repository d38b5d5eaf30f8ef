// Temporary files of one process: where calibration activations spill (pipeline/activation_store.h)
// and where tensors a transformation builds wait for the writer without staying resident.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "core/bytes.h"
#include "core/encoding.h"
#include "core/error.h"

namespace llmc {

// $TMPDIR, else /tmp.
std::string temp_dir();

// An anonymous file in dir, read-write: O_TMPFILE where the file system has it, else mkstemp +
// unlink. Nothing is left behind, whatever happens. `what` names the user in errors.
Result<int> open_unlinked(const std::string& dir, const std::string& what);

// An unlinked file that holds tensor bytes in place of the heap: each store() writes them at the
// end of the file and answers a read-only shared mapping of them (formats/file_io.h map_file_range).
// Nothing of it is resident until read, and release_file_pages gives read pages back, so a model
// whose tensors live here costs the process little RSS however large it is (docs/architecture.md,
// "Memory"). A range's disk blocks are freed when its last view goes.
class ScratchFile {
 public:
  static Result<std::shared_ptr<ScratchFile>> create(const std::string& dir);
  ~ScratchFile();
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;

  // A view of a copy of `bytes` in the file (page-aligned). Errors (a full disk) leave the file as it was.
  Result<Bytes> store(std::span<const uint8_t> bytes);
  // The same for bytes produced a part at a time: reserve() a page-aligned range at the end of the
  // file, write() its parts (any order, any thread), then view() it.
  struct Range {
    uint64_t at = 0;
    uint64_t size = 0;
  };
  Range reserve(uint64_t size);
  Result<void> write(const Range& range, uint64_t offset, std::span<const uint8_t> bytes);
  Result<Bytes> view(const Range& range);
  // A copy of the tree whose heap buffers are store()d here (views of mapped files are kept).
  Result<EncodingPtr> store(const Encoding& enc);
  // Bytes stored so far (with page padding).
  uint64_t size() const;
  // Bytes the file occupies on disk now: a range's blocks are freed (punched out) when its last
  // view goes.
  uint64_t disk_bytes() const;
  const std::string& dir() const { return dir_; }

 private:
  ScratchFile() = default;
  std::shared_ptr<const int> fd_;  // closed when the file and its last view are gone
  std::string dir_;
  uint64_t end_ = 0;
  mutable std::mutex mutex_;
};

// Where a model's heap tensors go in a low-memory transformation: the scratch file when there is one
// (`scratch` non-null), else nowhere. A failed store (full disk) keeps the tensor on the heap and warns once.
EncodingPtr store_or_keep(ScratchFile* scratch, const EncodingPtr& enc);

// Gives free heap memory back to the system (glibc malloc_trim). Large buffers freed after a store
// would otherwise stay resident: malloc's mmap threshold grows with the first large free, and the
// heap's top is pinned by what was allocated since.
void trim_heap();

}  // namespace llmc
