#pragma once
// A run folder belongs to one process at a time, and a new run never lands on top of another's
// files: cac_train and cac_eval lock the folders they use (an advisory flock on RUN/.cac.lock, held
// until they exit, killed included), and a new run refuses a folder that already holds a run.
#include <string>

namespace cac::app {

// Held for the lifetime of the object; a second holder gets a cac::Error naming the folder, the
// program using it and that program's PID. Also removes the temporaries killed processes left there.
class RunFolderLock {
 public:
  RunFolderLock(const std::string& dir, const char* program);
  ~RunFolderLock();
  RunFolderLock(const RunFolderLock&) = delete;
  RunFolderLock& operator=(const RunFolderLock&) = delete;

 private:
  int fd_ = -1;
};

// What a new run does with a folder that already holds a run: refuse (the default), or delete that
// run's files first (cac_train --overwrite).
enum class ExistingRun { Refuse, Overwrite };

// Readies `dir` (created, locked by the caller) for a new run: empty, or holding only what a run
// killed or stopped in its first epoch leaves (config.json, train.log, and at most one epoch's
// metrics.csv and best.safetensors, no last.safetensors: nothing to resume, so it is started over).
// Anything else is refused naming what is there and what to do, unless `existing` is Overwrite:
// then the files a run and its evaluation write (checkpoints, metrics, logs, deploy.json, ...) are
// deleted and any others are kept and named. Returns a line for the log ("" when nothing was there).
std::string prepare_new_run_folder(const std::string& dir, ExistingRun existing);

}  // namespace cac::app
