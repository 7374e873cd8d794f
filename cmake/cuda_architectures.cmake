# cac_default_cuda_architectures(OUT): the GPU architectures to build for when the user did not set
# CMAKE_CUDA_ARCHITECTURES: those of this machine's GPUs (nvidia-smi's compute capabilities) that
# the toolkit can compile for, so a fresh build runs on the GPU it is built on (an A100, an RTX
# 4090, ...); 90 (Hopper, the project's target) on a machine without a GPU, such as CI. A GPU the
# toolkit cannot target is named in a warning; the programs then say the same at run time.
function(cac_default_cuda_architectures out)
  set(archs "")
  set(found_gpu OFF)
  find_program(CAC_NVIDIA_SMI nvidia-smi)
  if(CAC_NVIDIA_SMI)
    execute_process(COMMAND "${CAC_NVIDIA_SMI}" --query-gpu=compute_cap --format=csv,noheader
                    OUTPUT_VARIABLE caps RESULT_VARIABLE failed ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
    execute_process(COMMAND "${CMAKE_CUDA_COMPILER}" --list-gpu-code
                    OUTPUT_VARIABLE known RESULT_VARIABLE known_failed ERROR_QUIET)
    if(NOT failed)
      string(REPLACE "\n" ";" caps "${caps}")
      foreach(cap IN LISTS caps)
        string(STRIP "${cap}" cap)
        if(NOT cap MATCHES "^([0-9]+)\\.([0-9]+)$")
          continue()
        endif()
        set(arch "${CMAKE_MATCH_1}${CMAKE_MATCH_2}")
        set(found_gpu ON)
        if(NOT known_failed AND NOT known MATCHES "sm_${arch}")
          string(STRIP "${known}" known)
          string(REPLACE "\n" " " known "${known}")
          message(WARNING "This machine has an sm_${arch} GPU, which ${CMAKE_CUDA_COMPILER} cannot compile "
                          "for (it knows: ${known}), so the build has no code for it. Use a CUDA toolkit "
                          "that supports sm_${arch}, or set -DCMAKE_CUDA_ARCHITECTURES.")
          continue()
        endif()
        list(APPEND archs "${arch}")
      endforeach()
      list(REMOVE_DUPLICATES archs)
    endif()
  endif()
  if(archs)
    message(STATUS "cac: CUDA architectures ${archs} (this machine's GPUs; set CMAKE_CUDA_ARCHITECTURES to override)")
  else()
    set(archs 90)
    if(found_gpu)
      set(why "none of this machine's GPUs is one the toolkit can target")
    else()
      set(why "no GPU found here")
    endif()
    message(STATUS "cac: CUDA architectures 90 (${why}; set CMAKE_CUDA_ARCHITECTURES for another GPU)")
  endif()
  set(${out} "${archs}" PARENT_SCOPE)
endfunction()
