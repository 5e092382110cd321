// error.h: the one exception type family reparq throws, with the exit code a CLI maps it to.
#pragma once
#include <stdexcept>
#include <string>

namespace reparq {

// Exit codes (README): 0 ok, 1 usage, 2 bad input file or data, 3 internal error.
enum ExitCode : int { kExitOk = 0, kExitUsage = 1, kExitInput = 2, kExitInternal = 3 };

class Error : public std::runtime_error {
 public:
  Error(ExitCode code, const std::string& what) : std::runtime_error(what), code_(code) {}
  ExitCode code() const { return code_; }

 private:
  ExitCode code_;
};

// A flag, value or combination of options the user gave is impossible.
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& what) : Error(kExitUsage, what) {}
};

// A file or data set is missing, truncated, corrupt or does not match what it should hold.
// The message names the file and the problem.
class InputError : public Error {
 public:
  explicit InputError(const std::string& what) : Error(kExitInput, what) {}
};

}  // namespace reparq
