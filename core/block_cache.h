#pragma once
// The bookkeeping of the CUDA caching allocator (core/cuda/runtime.cu) as plain host code, so that
// its rules are tested without a GPU. Blocks are binned by rounded size and handed out again as
// soon as they are freed: all device work runs on one stream, so a later use is ordered after the
// earlier one. A CUDA graph breaks that rule: its replays run the recorded kernels on the recorded
// addresses long after the recording freed them. So every block handed out while a graph is being
// recorded belongs to that graph until it is destroyed: freed, it waits in the graph's reserve
// instead of the shared bins, and nothing recorded or run eagerly later can be given it. So does
// every block freed during the recording, whenever it was handed out: the recorded work may have
// used it before freeing it (a cuDNN workspace outgrown halfway through a step).
#include <cstddef>
#include <map>
#include <utility>
#include <vector>

namespace cac {

class BlockCache {
 public:
  using Owner = const void*;
  // Blocks are whole multiples of 512 B below 1 MiB, of 2 MiB above.
  static size_t round(size_t bytes);

  // A free block of `size` (already rounded), or nullptr: the caller then makes a new one. Either
  // way the caller reports the block with handed_out().
  void* take(size_t size);
  void handed_out(void* p, size_t size);
  void give_back(void* p, size_t size);

  // Between these two, every block handed out or given back is the recording's; end_recording(nullptr)
  // (the recording failed and no graph holds its blocks) leaves them in the shared bins.
  void begin_recording();
  void end_recording(Owner graph);
  bool recording() const { return recording_on_; }
  // The graph is gone: its free blocks go back to the bins, blocks still in use go there when freed.
  void release(Owner graph);

  // Every free block of the shared bins, removed from them (for cudaFree); held blocks stay.
  std::vector<std::pair<size_t, void*>> drain();
  size_t held_bytes(Owner graph) const;  // free blocks waiting in the graph's reserve

 private:
  std::map<size_t, std::vector<void*>> free_;
  bool recording_on_ = false;
  std::map<void*, size_t> recorded_;                            // handed out or freed while recording
  std::map<void*, Owner> owned_;                                // in use, the graph's once freed
  std::map<Owner, std::vector<std::pair<size_t, void*>>> held_;  // free, kept for the graph
};

}  // namespace cac
