// File access shared by every reader and writer: read-only mappings, bounds-checked parsing,
// and atomic output (temp file in the same directory, renamed when complete).
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/bytes.h"
#include "core/error.h"

namespace llmc {

struct Encoding;

// A whole file mapped read-only. Bytes views created from it keep it alive.
class MappedFile {
 public:
  static Result<std::shared_ptr<MappedFile>> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // A Bytes view of [offset, offset+size); the caller has checked the range.
  Bytes bytes(std::shared_ptr<const MappedFile> self, uint64_t offset, uint64_t size) const;

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// A read-only shared mapping of [offset, offset + size) of open file `fd` (offset a multiple of the
// page size), known to release_file_pages like a MappedFile; unmapped when the last view of it goes.
// `what` names the file in errors.
Result<Bytes> map_file_range(int fd, uint64_t offset, size_t size, const std::string& what);

// All `size` bytes between `data` and open file `fd` at `offset` (pwrite when `write`, else pread),
// retrying interrupted and short transfers. On failure: kIo, "<what>: cannot write|read N MiB:
// <reason>".
Result<void> transfer_at(int fd, bool write, void* data, size_t size, uint64_t offset, std::string_view what);

// Drops the resident pages wholly inside [data, data + size) when that range lies in a live
// MappedFile (madvise MADV_DONTNEED: a later read faults them in from the file again, so the bytes
// stay valid and only memory is traded for I/O); does nothing for any other memory. The mapping maps
// 4 KiB pages from then on (MADV_NOHUGEPAGE: a 2 MiB entry of the page cache would keep a released
// range resident while any other part of it is mapped). Passes call it on input tensors they have
// replaced, so peak RSS does not grow with the processed input.
void release_file_pages(const void* data, size_t size);
// Whether [data, data + size) lies in a live mapping of a file (MappedFile, map_file_range).
bool is_file_backed(const void* data, size_t size);
// release_file_pages of every buffer of an encoding (its Dense/Quant bytes, a Sparse tensor's
// values and index, the parts of a LowRank, …): what a pass calls on an input tensor it replaced,
// and the runtime on the weights of a block it has run (RuntimeOptions::release_weight_pages).
void release_file_pages(const Encoding& enc);

// Backs heap memory [data, data + size) with transparent huge pages now: madvise MADV_HUGEPAGE,
// then MADV_COLLAPSE on the 2 MiB pages the range touches (or, where that fails, on those wholly
// inside it); the kernel copies them into huge pages in place, and every byte stays the same.
// Returns the bytes collapsed: 0 for ranges near a MappedFile (the page cache cannot collapse) or
// where the kernel refuses (THP off, kernels before 6.1, no free huge page). The runtime calls it
// on the weights it streams (docs/runtime.md, "Weights in transparent huge pages").
size_t collapse_huge_pages(const void* data, size_t size);

// Sequential little-endian reader over untrusted bytes; every read is bounds-checked and
// failures name the file and the offset.
class ByteReader {
 public:
  ByteReader(std::string file, const uint8_t* data, size_t size) : file_(std::move(file)), data_(data), size_(size) {}

  size_t offset() const { return pos_; }
  size_t size() const { return size_; }
  size_t remaining() const { return size_ - pos_; }
  Result<void> seek(uint64_t offset);
  Result<void> skip(uint64_t n);
  Result<uint8_t> u8();
  Result<uint16_t> u16();
  Result<uint32_t> u32();
  Result<int32_t> i32();
  Result<uint64_t> u64();
  Result<int64_t> i64();
  Result<float> f32();
  Result<double> f64();
  // Pointer to the next n bytes, then advance.
  Result<const uint8_t*> take(uint64_t n);
  Result<std::string> string(uint64_t n);
  // An error naming the file and the current offset: "model.gguf: at offset 24: <what>".
  Error error(ErrorCode code, const std::string& what) const;

 private:
  std::string file_;
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Writes to "<path>.tmp-XXXXXX" next to the target and renames on commit(); if destroyed
// without commit() the temp file is removed, so no partial output is ever left behind.
class AtomicOutput {
 public:
  static Result<std::unique_ptr<AtomicOutput>> create(const std::string& path);
  ~AtomicOutput();
  Result<void> write(const void* data, size_t size);
  Result<void> write_zeros(size_t size);
  Result<void> pad_to(uint64_t alignment);  // zero-fill up to the next multiple
  // Overwrites [offset, offset + size), which must lie before position() (headers written last).
  Result<void> write_at(uint64_t offset, const void* data, size_t size);
  uint64_t position() const { return pos_; }
  Result<void> commit();  // flush, fsync, rename over the target
  const std::string& path() const { return path_; }

 private:
  AtomicOutput() = default;
  static constexpr uint64_t kWritebackChunk = uint64_t{64} << 20;
  void start_writeback();  // asks the kernel to start writing [writeback_from_, pos_) to disk
  std::string path_;
  std::string tmp_path_;
  std::FILE* file_ = nullptr;
  uint64_t pos_ = 0;
  uint64_t writeback_from_ = 0;
  bool committed_ = false;
};

// Refuses to write `out` when it is one of the inputs (same file, also via links) or when it
// exists and `force` is false.
Result<void> check_output_path(const std::string& out, const std::vector<std::string>& inputs, bool force);

Result<std::string> read_text_file(const std::string& path, size_t max_bytes = size_t(1) << 30);

}  // namespace llmc

namespace llmc {
// xxHash64 (seed 0) of a file's bytes; for a folder, of its regular files in name order.
Result<uint64_t> hash_path(const std::string& path);
// Bytes of a file, or of all regular files below a folder.
uint64_t path_size(const std::string& path);
}  // namespace llmc
