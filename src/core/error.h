// Error values for untrusted input (Result<T>) and the one abort macro for broken invariants.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <utility>
#include <variant>

namespace llmc {

// Stable error codes; main() maps them to exit codes (tools/llmc/exit_codes.h).
enum class ErrorCode {
  kIo = 1,               // file missing, unreadable, write failed, disk full
  kFormat = 2,           // input bytes are not a valid file of the claimed format
  kUnsupported = 3,      // valid input using something llmc does not implement
  kInvalidArgument = 4,  // bad option or option combination
  kShape = 5,            // tensor shapes inconsistent with each other or the config
  kExists = 6,           // output exists and --force was not given, or output == input
  kRecipe = 7,           // recipe file invalid (unknown key, bad value)
  kInternal = 8,         // should not happen; reported instead of crashing
};

const char* error_code_name(ErrorCode code);

struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
};

// Concatenates anything streamable: str_cat("tensor ", name, " at offset ", off).
template <class... Args>
std::string str_cat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}

template <class... Args>
Error make_error(ErrorCode code, Args&&... args) {
  return Error{code, str_cat(std::forward<Args>(args)...)};
}

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT(google-explicit-constructor)
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }

 private:
  Error error_;
  bool ok_ = true;
};

// Prefixes context ("reading model.gguf: ") onto an error message.
inline Error with_context(Error e, const std::string& context) {
  e.message = context + ": " + e.message;
  return e;
}

[[noreturn]] void check_failed(const char* expr, const char* file, int line, const std::string& msg);

}  // namespace llmc

#define LLMC_CONCAT_INNER(a, b) a##b
#define LLMC_CONCAT(a, b) LLMC_CONCAT_INNER(a, b)

// Returns the error of a Result<void> expression from the enclosing function.
#define LLMC_TRY(expr)                                           \
  do {                                                           \
    auto llmc_try_result_ = (expr);                              \
    if (!llmc_try_result_.ok()) return llmc_try_result_.error(); \
  } while (0)

// `LLMC_ASSIGN_OR_RETURN(auto x, f());` binds the value or returns the error.
#define LLMC_ASSIGN_OR_RETURN(lhs, expr) LLMC_ASSIGN_OR_RETURN_IMPL(LLMC_CONCAT(llmc_result_, __LINE__), lhs, expr)
#define LLMC_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.error();               \
  lhs = std::move(tmp).value()

// Broken internal invariant: abort with file and line. Never for untrusted input.
#define LLMC_CHECK(cond, ...)                                                                      \
  do {                                                                                             \
    if (!(cond)) ::llmc::check_failed(#cond, __FILE__, __LINE__, ::llmc::str_cat("" __VA_ARGS__)); \
  } while (0)
