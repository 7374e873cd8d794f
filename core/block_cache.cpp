#include "core/block_cache.h"

#include <algorithm>

namespace cac {

size_t BlockCache::round(size_t bytes) {
  const size_t q = bytes < (size_t(1) << 20) ? 512 : (size_t(2) << 20);
  return (std::max<size_t>(bytes, 1) + q - 1) / q * q;
}

void* BlockCache::take(size_t size) {
  auto it = free_.find(size);
  if (it == free_.end() || it->second.empty()) return nullptr;
  void* p = it->second.back();
  it->second.pop_back();
  return p;
}

void BlockCache::handed_out(void* p, size_t size) {
  if (recording_on_) recorded_[p] = size;
}

void BlockCache::give_back(void* p, size_t size) {
  if (recording_on_) recorded_[p] = size;
  auto own = owned_.find(p);
  if (own != owned_.end()) {
    held_[own->second].emplace_back(size, p);
    owned_.erase(own);
    return;
  }
  free_[size].push_back(p);
}

void BlockCache::begin_recording() {
  recording_on_ = true;
  recorded_.clear();
}

void BlockCache::end_recording(Owner graph) {
  recording_on_ = false;
  if (graph) {
    for (const auto& [p, size] : recorded_) {
      auto& bin = free_[size];
      auto it = std::find(bin.begin(), bin.end(), p);
      if (it != bin.end()) {  // freed by the recording: kept for the graph from now on
        bin.erase(it);
        held_[graph].emplace_back(size, p);
      } else {  // still in use (a tensor that outlives the recording): the graph's when freed
        owned_[p] = graph;
      }
    }
  }
  recorded_.clear();
}

void BlockCache::release(Owner graph) {
  auto it = held_.find(graph);
  if (it != held_.end()) {
    for (const auto& [size, p] : it->second) free_[size].push_back(p);
    held_.erase(it);
  }
  for (auto own = owned_.begin(); own != owned_.end();) own = own->second == graph ? owned_.erase(own) : std::next(own);
}

std::vector<std::pair<size_t, void*>> BlockCache::drain() {
  std::vector<std::pair<size_t, void*>> out;
  for (auto& [size, blocks] : free_) {
    for (void* p : blocks) out.emplace_back(size, p);
    blocks.clear();
  }
  return out;
}

size_t BlockCache::held_bytes(Owner graph) const {
  auto it = held_.find(graph);
  size_t n = 0;
  if (it != held_.end())
    for (const auto& held : it->second) n += held.first;
  return n;
}

}  // namespace cac
