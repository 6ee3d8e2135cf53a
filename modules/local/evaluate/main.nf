process EVALUATE {
    tag "cohort"
    label 'process_low'

    input:
    path(clusters, stageAs: 'slides/*')
    path(beside, stageAs: 'slides/*')
    path(versions, stageAs: 'versions/*')

    output:
    path "summary.csv", emit: csv
    path "summary.parquet", emit: parquet
    path "summary.json", emit: json
    path "report.html", emit: report
    path "*.metrics.parquet", emit: metrics, optional: true
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    # torch, BLAS and numba use the CPUs Nextflow gave the task, not every core of the node
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus} OPENBLAS_NUM_THREADS=${task.cpus} NUMBA_NUM_THREADS=${task.cpus}

    senca evaluate \\
        ${clusters} \\
        --versions ${versions} \\
        ${args} \\
        --outdir .

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        senca: \$(senca --version | sed 's/senca, version //')
    END_VERSIONS
    """

    stub:
    """
    touch summary.csv summary.parquet summary.json report.html

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        senca: \$(senca --version | sed 's/senca, version //')
    END_VERSIONS
    """
}
