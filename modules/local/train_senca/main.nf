process TRAIN_SENCA {
    tag "${meta.id}"
    label 'process_gpu'

    input:
    tuple val(meta), path(spots), path(expr), path(graph), path(patches)

    output:
    tuple val(meta), path("${prefix}.model.pt"), emit: model
    tuple val(meta), path("${prefix}.embeddings.parquet"), emit: embeddings
    tuple val(meta), path("${prefix}.train_log.parquet"), emit: train_log
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}"
    def patches_arg = patches ? "--patches ${patches}" : ''
    """
    senca train-senca \\
        --spots ${spots} \\
        --expr ${expr} \\
        --graph ${graph} \\
        ${patches_arg} \\
        ${args} \\
        --outdir .

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        senca: \$(senca --version | sed 's/senca, version //')
    END_VERSIONS
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    touch ${prefix}.model.pt ${prefix}.embeddings.parquet ${prefix}.train_log.parquet

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        senca: \$(senca --version | sed 's/senca, version //')
    END_VERSIONS
    """
}
