"""The tuning loop: metrics from verdicts (`metrics`), DSPy optimizer runs (`compile`),
Optuna sweeps over the pipeline's knobs (`sweep`) and coverage-guided generation
(`coverage`). Import the submodules; this package imports nothing heavy."""
