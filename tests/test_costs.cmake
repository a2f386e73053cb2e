# Run order of the discovered GoogleTest tests for `ctest -j` (malformed_inputs and the scripts: tests/CMakeLists.txt).
# A fresh build has no timings from earlier runs, so ctest would start tests in declaration order and the long
# end-to-end tests (discovered last) would run alone at the end while the other core idles.
# COST starts them first. Values: seconds in the sanitized pass (AMD EPYC Zen 5, 2 jobs).
foreach(entry
    "CrashResume.KillAnywhereThenResumeGivesTheUninterruptedRun=154"
    "TrainerTest.EveryMethodTrainsAndResumesBitForBit=140" "TrainerTest.ResumeContinuesBitForBit=85"
    "CrashResume.ADamagedNewestCheckpointFallsBackToThePreviousOne=67"
    "CrashResume.AfterANonFiniteLossResumeWithALowerLrContinuesFromTheLastRegularCheckpoint=39"
    "FmnistConvNet.TrainsToAtLeast85PercentTestAccuracy=30"
    "MpiTrain.AKilledProcessEndsTheRunAndResumeWithTwoOrOneProcessFinishesIt=12"
    "MpiTrain.TwoProcessesGiveTheOneProcessRunAndTheSameBitsRunToRun=10"
    "MpiTrain.AHungProcessEndsTheRunAfterTheTimeout=9")
  string(REPLACE "=" ";" pair "${entry}")
  list(GET pair 0 name)
  list(GET pair 1 cost)
  set_tests_properties("${name}" PROPERTIES COST ${cost})  # a name this build lacks is ignored
endforeach()
