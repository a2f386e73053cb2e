# Run order of the discovered GoogleTest tests for `ctest -j` (malformed_inputs and the scripts: tests/CMakeLists.txt).
# A fresh build has no timings from earlier runs, so ctest would start tests in declaration order and the long
# end-to-end tests (discovered last) would run alone at the end while the other core idles.
# COST starts them first. Values: seconds in the sanitized pass (AMD EPYC Zen 5, 2 jobs, OMP_WAIT_POLICY=passive),
# the MPI and classifier tests in the native pass.
foreach(entry
    "CrashResume.KillAnywhereThenResumeGivesTheUninterruptedRun=39"
    "TrainerTest.EveryMethodTrainsAndResumesBitForBit=41" "TrainerTest.ResumeContinuesBitForBit=28"
    "CrashResume.ADamagedNewestCheckpointFallsBackToThePreviousOne=15"
    "CrashResume.AfterANonFiniteLossResumeWithALowerLrContinuesFromTheLastRegularCheckpoint=9"
    "FmnistConvNet.TrainsToAtLeast85PercentTestAccuracy=9"
    "MpiTrain.AKilledProcessEndsTheRunAndResumeWithTwoOrOneProcessFinishesIt=13"
    "MpiTrain.TwoProcessesGiveTheOneProcessRunAndTheSameBitsRunToRun=6"
    "MpiTrain.AHungProcessEndsTheRunAfterTheTimeout=6")
  string(REPLACE "=" ";" pair "${entry}")
  list(GET pair 0 name)
  list(GET pair 1 cost)
  set_tests_properties("${name}" PROPERTIES COST ${cost})  # a name this build lacks is ignored
endforeach()
