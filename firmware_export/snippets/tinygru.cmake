# tinygru.cmake: build a tinygru model into a firmware with CMake (3.20 or newer).
#
#   include(path/to/tinygru/firmware_export/snippets/tinygru.cmake)
#   add_executable(firmware main.c)
#   tinygru_add_model(firmware ${CMAKE_CURRENT_SOURCE_DIR}/models/har har)
#
# tinygru_add_model(<target> <bundle> <prefix> [OUT <dir>] [EXPORT_ARGS <arg>...])
# exports the bundle into OUT (default ${CMAKE_CURRENT_BINARY_DIR}/tinygru_<prefix>),
# adds the engine and <prefix>_model.c to <target> and the export folders to its
# include path. The export is re-run when the bundle's step_int8.tflite or
# manifest.json, or an engine source of this checkout, changes. TINYGRU_PYTHON
# (cache variable, default python3) is the interpreter that runs the exporter.

set(TINYGRU_ROOT "${CMAKE_CURRENT_LIST_DIR}/../.." CACHE PATH "tinygru checkout")
set(TINYGRU_PYTHON "python3" CACHE STRING "Python interpreter with the tinygru requirements")

function(tinygru_add_model target bundle prefix)
  cmake_parse_arguments(PARSE_ARGV 3 TG "" "OUT" "EXPORT_ARGS")
  get_filename_component(bundle "${bundle}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  if(NOT TG_OUT)
    set(TG_OUT "${CMAKE_CURRENT_BINARY_DIR}/tinygru_${prefix}")
  endif()
  get_filename_component(root "${TINYGRU_ROOT}" ABSOLUTE)
  file(GLOB engine_src CONFIGURE_DEPENDS "${root}/firmware_export/engine/*.c"
       "${root}/firmware_export/engine/*.h")
  list(SORT engine_src)
  set(outputs "${TG_OUT}/${prefix}_model.c" "${TG_OUT}/${prefix}_model.h"
      "${TG_OUT}/${prefix}_config.h")
  set(sources "${TG_OUT}/${prefix}_model.c")
  foreach(f IN LISTS engine_src)
    get_filename_component(name "${f}" NAME)
    list(APPEND outputs "${TG_OUT}/engine/${name}")
    if(name MATCHES "\\.c$")
      list(APPEND sources "${TG_OUT}/engine/${name}")
    endif()
  endforeach()
  add_custom_command(
    OUTPUT ${outputs}
    COMMAND ${CMAKE_COMMAND} -E env "PYTHONPATH=${root}"
            ${TINYGRU_PYTHON} -m firmware_export --bundle "${bundle}" --out "${TG_OUT}"
            --prefix ${prefix} ${TG_EXPORT_ARGS}
    COMMAND ${CMAKE_COMMAND} -E touch ${outputs}
    DEPENDS "${bundle}/step_int8.tflite" "${bundle}/manifest.json" ${engine_src}
    COMMENT "tinygru: exporting ${bundle}"
    VERBATIM)
  target_sources(${target} PRIVATE ${sources})
  target_include_directories(${target} PRIVATE "${TG_OUT}" "${TG_OUT}/engine")
endfunction()
